"""Hot standby (``coordination.standby: 1``): kill -9 of a replica loses no trade.

Three replicas share 24 v5 ``publicTrade`` symbols and 4 ``orderbook.50``
books; each shard is also streamed, unwritten, by a standby replica. One
replica is killed with SIGKILL: v5 sends no history on subscribe, so without a
standby every trade of the session timeout is lost (see
``test_handover_v5``'s crash figures); with one, the standby writes what the
dead owner had not. Against an independent client at the exchange: no trade
lost, none written twice, every book delta continuing its book's chain.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.config.load import load
from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer
from connector.scaleout import coordinator
from tests.integration import test_handover_v5 as handover
from tests.integration.test_scaleout import Replica, start_replica, wait_for

pytestmark = pytest.mark.integration
SYMBOLS = [f"K{i:02d}USDT" for i in range(24)]
BOOKS = SYMBOLS[:4]
SHARDS = 6


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0) as server:
        yield server


def covered(replicas: list[Replica]) -> bool:
    """Every shard owned once and shadowed once, each replica ready."""
    owned: list[int] = []
    shadowed: list[int] = []
    for r in replicas:
        body = r.status()
        if body is None or not body.get("ready"):
            return False
        owned += body["coordination"]["shards_owned"]
        shadowed += [int(s) for s, v in body["coordination"].get("standby", {}).items()
                     if v["streaming"]]
    return sorted(owned) == list(range(SHARDS)) and sorted(shadowed) == list(range(SHARDS))


def test_kill_of_the_owner_loses_nothing_with_a_standby(
        kafka_broker: KafkaBroker, exchange: ExchangeServer, tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    prefix = f"stby.{uuid.uuid4().hex[:6]}"
    group = f"stby-{uuid.uuid4().hex[:6]}"

    def config(port: int) -> Path:
        path = tmp_path / f"config-{port}.yaml"
        path.write_text(f"""
bybit: {{urls: {{v5: "{exchange.url}/v5/public/spot"}}}}
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{host: 127.0.0.1, port: {port}}}
coordination: {{group: {group}, shards: {SHARDS}, standby: 1}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [{", ".join(SYMBOLS)}]}}
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [{", ".join(BOOKS)}]}}
""")
        return path

    truth = handover.GroundTruth(exchange, SYMBOLS)
    replicas = [start_replica(tmp_path, f"s{i}", config) for i in range(3)]
    try:
        wait_for("every shard owned and shadowed", lambda: covered(replicas), 90, replicas)
        time.sleep(3)
        victim = max(replicas, key=lambda r: len(r.shards()))
        killed_ms = int(time.time() * 1000)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        replicas.remove(victim)
        wait_for("a standby to write the dead owner's shards",
                 lambda: any("wrote again" in r.log.read_text() for r in replicas)
                 and handover.ready(replicas), 40, replicas)
        # The new owners seed after the standby wrote, then release what they held.
        time.sleep(coordinator.SEED_AFTER_STANDBY_SECONDS - coordinator.TAKEOVER_AFTER_SECONDS - 2)
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
    topic = cfg.kafka_topic(cfg.subscriptions[0])
    book_topic = cfg.kafka_topic(cfg.subscriptions[1])
    decoder = AvroDecoder()
    got = read_all(bootstrap, [topic, book_topic], timeout=60)
    written = Counter(decoder.decode("v5_public_trade", m)["trade_id"] for m in got[topic])
    sent = {t: ts for t, ts in truth.trades.items() if killed_ms - 3000 <= ts <= ended_ms}
    lost = sorted(ts - killed_ms for t, ts in sent.items() if t not in written)
    twice = [t for t, n in written.items() if n > 1]
    chains: dict[str, int | None] = {}
    splices = []
    for m in got[book_topic]:
        rec = decoder.decode("v5_orderbook", m)
        sym, u = rec["symbol"], rec["update_id"]
        if rec["is_snapshot"]:
            chains[sym] = u
        elif rec["resync_reason"]:
            chains[sym] = None
        else:
            if chains.get(sym) is None or u != chains[sym] + 1:  # type: ignore[operator]
                splices.append((sym, chains.get(sym), u))
            chains[sym] = u
    logs = "\n".join(line for r in replicas for line in r.log.read_text().splitlines()
                     if "standby" in line)
    print(f"\nkill -9 with a standby: {len(sent)} trades sent around the kill, "
          f"{len(lost)} lost, {len(twice)} written twice; {len(splices)} book splices\n{logs}")
    assert len(sent) > 500, len(sent)
    assert not lost, (f"{len(lost)} trades lost (ms after the kill)", lost[:20], lost[-5:])
    assert not twice, twice[:5]
    assert not splices, splices[:5]
