"""Hand-over drill: what a crash, a scale-up and a SIGTERM cost, measured.

Starts a local Kafka broker and the local exchange, an independent
ground-truth client subscribed to every trade topic at the exchange, and
``--replicas`` connector processes sharing ``--symbols`` v5 ``publicTrade``
symbols and ``--books`` ``orderbook.50`` books over ``--shards`` shards
(``coordination.standby`` from ``--standby``). Then, one after another:
``kill -9`` of the replica owning most shards, a replica added, ``SIGTERM``
of a replica; each is followed until every shard streams again and the new
owners have written what they held.

Prints per event: trades sent (by the exchange, during the event's window),
lost (sent, never in Kafka), written twice, the longest gap (per symbol, the
span of its consecutive lost trades), and whether every book stayed
rebuildable (each delta continues its predecessor's ``u``; a snapshot or a
resync marker restarts). Before the events, the steady-state cost: Bybit
connections open at the exchange, CPU (% of one core) and RSS per replica.

Usage: python scripts/handover_drill.py [--standby 0|1] [--replicas 3] [--shards 12]
       [--symbols 60] [--books 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.config.load import load
from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer
from tests.integration.test_handover_v5 import GroundTruth
from tests.integration.test_scaleout import Replica, start_replica


def wait(check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s")


def all_ready(replicas: list[Replica], shards: int) -> bool:
    owned: list[int] = []
    for r in replicas:
        body = r.status()
        if body is None or not body.get("ready"):
            return False
        owned += body["coordination"]["shards_owned"]
    return sorted(owned) == list(range(shards))


def shadowed(replicas: list[Replica]) -> list[int]:
    out: list[int] = []
    for r in replicas:
        body = r.status() or {}
        out += [int(s) for s, v in body.get("coordination", {}).get("standby", {}).items()
                if v.get("streaming")]
    return sorted(out)


def rss_mb(r: Replica) -> float:
    for line in Path(f"/proc/{r.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--standby", type=int, default=0)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--symbols", type=int, default=60)
    parser.add_argument("--books", type=int, default=10)
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait after each event (default: 12, 28 with a standby)")
    parser.add_argument("--verbose", action="store_true",
                        help="print a few trades written twice, with when")
    args = parser.parse_args()
    settle = args.settle or (28.0 if args.standby else 12.0)
    symbols = [f"D{i:03d}USDT" for i in range(args.symbols)]
    books = symbols[:args.books]
    tmp = Path(tempfile.mkdtemp(prefix="drill-"))
    print(f"replica logs in {tmp}")
    prefix, group = f"drill.{uuid.uuid4().hex[:6]}", f"drill-{uuid.uuid4().hex[:6]}"

    with KafkaBroker() as broker, ExchangeServer(port=0) as exchange:
        def config(port: int) -> Path:
            path = tmp / f"config-{port}.yaml"
            path.write_text(f"""
bybit: {{urls: {{v5: "{exchange.url}/v5/public/spot"}}}}
kafka:
  bootstrap_servers: ["{broker.bootstrap_servers}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{host: 127.0.0.1, port: {port}}}
coordination: {{group: {group}, shards: {args.shards}, standby: {args.standby}}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [{", ".join(symbols)}]}}
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [{", ".join(books)}]}}
""")
            return path

        truth = GroundTruth(exchange, symbols)
        replicas = [start_replica(tmp, f"r{i}", config) for i in range(args.replicas)]
        events: list[tuple[str, int]] = []
        try:
            wait(lambda: all_ready(replicas, args.shards), 120)
            if args.standby:
                wait(lambda: shadowed(replicas) == list(range(args.shards)), 60)
            time.sleep(5)
            # Steady-state cost over 20 s.
            cpu0 = {r.name: r.cpu_seconds() for r in replicas}
            t0 = time.monotonic()
            time.sleep(20)
            elapsed = time.monotonic() - t0
            conns = len(exchange.v5.clients) - 1  # the ground-truth client's own
            print(f"standby {args.standby}: {args.replicas} replicas, {args.shards} shards, "
                  f"{args.symbols} publicTrade + {args.books} orderbook.50; "
                  f"{conns} Bybit connections")
            for r in replicas:
                cpu = (r.cpu_seconds() - cpu0[r.name]) / elapsed * 100
                print(f"  {r.name}: CPU {cpu:.0f} % of a core, RSS {rss_mb(r):.0f} MB")
            sent_rate = sum(1 for ts in list(truth.trades.values())
                            if ts >= int(time.time() * 1000) - 10_000) / 10
            print(f"  trades/s sent: {sent_rate:.0f}")

            victim = max(replicas, key=lambda r: len(r.shards()))
            events.append(("kill -9 of a replica", int(time.time() * 1000)))
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            replicas.remove(victim)
            wait(lambda: all_ready(replicas, args.shards), 90)
            time.sleep(settle)

            events.append(("a replica added", int(time.time() * 1000)))
            replicas.append(start_replica(tmp, "r-new", config))
            wait(lambda: all_ready(replicas, args.shards) and bool(replicas[-1].shards()), 90)
            time.sleep(3)
            wait(lambda: all_ready(replicas, args.shards), 60)
            time.sleep(settle)

            events.append(("SIGTERM of a replica", int(time.time() * 1000)))
            leaver = replicas.pop(0)
            leaver.proc.send_signal(signal.SIGTERM)
            leaver.proc.wait(60)
            wait(lambda: all_ready(replicas, args.shards), 90)
            time.sleep(settle)
            ended_ms = int(time.time() * 1000) - 2000
        finally:
            truth.close()
            for r in replicas:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in replicas:
                try:
                    r.proc.wait(60)
                except subprocess.TimeoutExpired:
                    r.proc.kill()

        cfg = load(config(0))
        topic, book_topic = (cfg.kafka_topic(s) for s in cfg.subscriptions)
        decoder = AvroDecoder()
        got = read_all(broker.bootstrap_servers, [topic, book_topic], timeout=120)
        trades = [decoder.decode("v5_public_trade", m) for m in got[topic]]
        written = Counter(t["trade_id"] for t in trades)
        copies: dict[str, list[int]] = {}  # trade id -> Kafka timestamps of its copies
        for m, t in zip(got[topic], trades, strict=True):
            if written[t["trade_id"]] > 1:
                copies.setdefault(t["trade_id"], []).append(m.timestamp_ms)
        splices: list[int] = []  # Kafka timestamps of book records that break a chain
        chains: dict[str, int | None] = {}
        for m in got[book_topic]:
            rec = decoder.decode("v5_orderbook", m)
            sym, u = rec["symbol"], rec["update_id"]
            if rec["is_snapshot"]:
                chains[sym] = u
            elif rec["resync_reason"]:
                chains[sym] = None
            else:
                if chains.get(sym) is None or u != chains[sym] + 1:  # type: ignore[operator]
                    splices.append(m.timestamp_ms)
                chains[sym] = u
        print(f"\n{'event':24} {'sent':>7} {'lost':>6} {'twice':>6} {'longest gap':>12} "
              f"{'books rebuildable':>18}")
        for i, (name, at) in enumerate(events):
            until = events[i + 1][1] if i + 1 < len(events) else ended_ms
            sent = {t: ts for t, ts in truth.trades.items() if at - 2000 <= ts < until}
            lost = {t: ts for t, ts in sent.items() if t not in written}
            twice = sum(1 for t in sent if written.get(t, 0) > 1)
            by_symbol: dict[str, list[int]] = {}
            for t, ts in lost.items():
                by_symbol.setdefault(str(truth.symbol_of.get(t, "")), []).append(ts)
            gap = max((max(v) - min(v) for v in by_symbol.values()), default=0) / 1000
            broken = sum(1 for ts in splices if at - 2000 <= ts < until)
            print(f"{name:24} {len(sent):>7} {len(lost):>6} {twice:>6} {gap:>10.1f} s "
                  f"{'yes' if not broken else f'no ({broken} splices)':>18}")
            if args.verbose:
                for t in sorted((t for t in sent if t in copies), key=sent.get)[:5]:
                    print(f"    twice: {t} {truth.symbol_of.get(t)} traded "
                          f"{(sent[t] - at) / 1000:+.1f} s, written at "
                          f"{[round((c - at) / 1000, 1) for c in copies[t]]} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
