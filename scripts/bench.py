"""Benchmark: the connector against two baselines measured in the same run.

Starts a real local Kafka broker (append-time timestamps, so a record's
Kafka timestamp is when the broker accepted it) and the local exchange (its
own process), then per scenario runs, one after another on the same data:

* ``raw``: kafka-python sending pre-encoded Avro bytes — flat out (the
  ceiling of the client library on this machine), and replaying the exact
  arrival times of the connector's records (same rate, same bursts: the
  latency reference);
* ``raw-confluent``: confluent-kafka (librdkafka) sending the same bytes
  flat out with the same settings: the ceiling of the optional backend;
* ``naive``: the loop a user would write — websocket-client → json →
  fastavro → ``producer.send`` per record;
* ``connector``: ``bybit-kafka-connector run`` as its own process, with the
  Kafka client chosen by ``--client`` (its config's ``kafka.client``); a comma list
  runs it once per client.

Reports records/s acknowledged by Kafka, latency from frame received to
broker append (p50/p99/p99.9, ms resolution), CPU seconds per 100k records,
CPU µs per record, peak RSS and records lost; prints a table and writes JSON.

Each contender runs ``--repeat`` times (default 3); the table shows medians.

Usage: python scripts/bench.py [--seconds 10] [--repeat 3] [--scenarios a,b,c,d]
       [--contenders connector,naive,raw,raw-confluent] [--out bench-results]
       [--client kafka-python,confluent-kafka] [--headers full,minimal]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import fastavro
import websocket
from kafka import KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.bybit.events import Stamp  # noqa: E402
from connector.bybit.legacy.frames import decode  # noqa: E402
from connector.dev.consume import read_all  # noqa: E402
from connector.dev.kafka_broker import KafkaBroker, free_port  # noqa: E402
from connector.records import MAPPERS, load_schema  # noqa: E402

PRODUCER = {"acks": "all", "compression_type": "lz4", "linger_ms": 10,
            "batch_size": 256 * 1024, "enable_idempotence": True}
# The same settings under librdkafka's names (confluent-kafka).
LIBRDKAFKA_PRODUCER = {"acks": "all", "compression.type": "lz4", "linger.ms": 10,
                       "batch.size": 256 * 1024, "enable.idempotence": True}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
CLIENT_SETTINGS = {"kafka-python": PRODUCER, "confluent-kafka": LIBRDKAFKA_PRODUCER}


@dataclass
class Scenario:
    name: str
    description: str
    subscriptions: list[dict[str, Any]]
    rate: float  # frames per second per subscription
    kind: str  # the record kind the naive loop and raw baseline write
    trades_per_frame: int = 1


def symbols(n: int, prefix: str = "S") -> list[str]:
    return [f"{prefix}{i:04d}USDT" for i in range(n)]


SCENARIOS = {
    "a": Scenario("a: trades, flat out", "v1 trade, 40 symbols, 200 frames/s each, 10 trades a "
                  "frame", [{"stream": "v1", "topic": "trade", "symbols": symbols(40)}], 200,
                  "v1_trade", trades_per_frame=10),
    "b": Scenario("b: realistic mix", "v2 bookTicker + depth for 500 symbols, v1 trades, klines",
                  [{"stream": "v2", "topic": "bookTicker", "symbols": symbols(500)},
                   {"stream": "v2", "topic": "depth", "symbols": symbols(500)},
                   {"stream": "v1", "topic": "trade", "symbols": symbols(50, "T")},
                   {"stream": "v1", "topic": "kline", "interval": "1m",
                    "symbols": symbols(50, "K")}], 10, "v2_book_ticker"),
    "c": Scenario("c: 200-level books", "v1 depth and diffDepth, 20 symbols, 50 frames/s each",
                  [{"stream": "v1", "topic": "depth", "symbols": symbols(20)},
                   {"stream": "v1", "topic": "diffDepth", "symbols": symbols(20, "D")}], 50,
                  "v1_depth"),
    "d": Scenario("d: 1,200 subscriptions, low rate", "v2 bookTicker + realtimes + trade, "
                  "400 symbols, 1 frame/s each",
                  [{"stream": "v2", "topic": t, "symbols": symbols(400)}
                   for t in ("bookTicker", "realtimes", "trade")], 1, "v2_book_ticker"),
}


@dataclass
class Result:
    scenario: str
    contender: str
    records: int
    seconds: float
    records_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    cpu_s_per_100k: float
    peak_rss_mb: float
    lost: int
    cpu_us_per_record: float = 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summarise(scenario: str, contender: str, latencies: list[float], seconds: float,
              cpu: float, rss: float, lost: int) -> Result:
    n = len(latencies)
    return Result(scenario, contender, n, round(seconds, 2), round(n / seconds, 1),
                  percentile(latencies, 0.5), percentile(latencies, 0.99),
                  percentile(latencies, 0.999), round(cpu / max(n, 1) * 100_000, 2),
                  round(rss, 1), lost, round(cpu / max(n, 1) * 1e6, 2))


def run_connector(sc: Scenario, exchange_url: str, bootstrap: str, seconds: float,
                  topic_prefix: str, client: str = "kafka-python",
                  headers: str = "full") -> tuple[Result, list[int]]:
    """The connector as its own process; also returns when each measured record
    arrived (frame receive time, epoch ms, sorted) for the replayed baseline."""
    subs = json.dumps(sc.subscriptions)
    # Defaults need no line, so the benchmark runs on configs without the keys.
    client_line = "" if client == "kafka-python" else f"  client: {client}\n"
    if headers != "full":
        client_line += f"  headers: {headers}\n"
    config = f"""
bybit:
  urls: {{v1: {exchange_url}/spot/quote/ws/v1, v2: {exchange_url}/spot/quote/ws/v2}}
  max_subscriptions_per_connection: 1000
  max_symbols_per_request: 50
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{topic_prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {topic_prefix}.dlq
{client_line}  producer: {json.dumps(CLIENT_SETTINGS[client])}
metrics: {{port: {free_port()}}}
subscriptions: {subs}
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    proc = subprocess.Popen([sys.executable, "-m", "connector", "--log-level", "WARNING", "run",
                             "--config", f.name], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # connect, subscribe, warm up
    start_wall = time.time() * 1000
    cpu0 = proc_cpu(proc.pid)
    time.sleep(seconds)
    cpu1 = proc_cpu(proc.pid)
    end_wall = time.time() * 1000
    rss = proc_hwm_mb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    os.unlink(f.name)
    lost = 0
    for line in err.splitlines():
        if "lost=" in line:
            lost = int(line.rsplit("lost=", 1)[1].split()[0])
    from connector.config.load import loads

    cfg = loads(config, env={})
    kinds = {cfg.kafka_topic(s): s.spec.kind for s in cfg.subscriptions}
    messages = read_all(bootstrap, list(kinds), timeout=120)
    latencies, arrivals = [], []
    for topic, msgs in messages.items():
        schema = fastavro.parse_schema(load_schema(kinds[topic]))
        for m in msgs:
            received = _received_ms(m, schema)
            if start_wall <= received < end_wall:
                latencies.append(m.timestamp_ms - received)
                arrivals.append(received)
    label = f"connector ({client})" if headers == "full" else f"connector ({client}, {headers})"
    return (summarise(sc.name, label, latencies, seconds, cpu1 - cpu0, rss, lost),
            sorted(arrivals))


def _received_ms(message: Any, schema: Any) -> int:
    """The frame's receive time: the header, or (``kafka.headers: minimal``) the
    record's ``receive_time`` field."""
    header = message.headers.get("bybit.received_ms")
    if header is not None:
        return int(header)
    record = fastavro.schemaless_reader(io.BytesIO(message.value), schema, None)
    received: datetime.datetime = record["receive_time"]  # type: ignore[call-overload, index]
    return (received - EPOCH) // datetime.timedelta(milliseconds=1)


def run_naive(sc: Scenario, exchange_url: str, bootstrap: str, seconds: float,
              topic: str) -> Result:
    """The obvious hand-written loop, one thread per stream, on this process."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)  # type: ignore[arg-type]
    schemas = {s["stream"] + s["topic"]: fastavro.parse_schema(load_schema(_kind(s)))
               for s in sc.subscriptions}
    stop = threading.Event()
    start_wall = time.time() * 1000
    cpu0 = time.process_time()

    def loop(stream: str, subs: list[dict[str, Any]]) -> None:
        path = "/spot/quote/ws/v1" if stream == "v1" else "/spot/quote/ws/v2"
        ws = websocket.create_connection(exchange_url + path, timeout=1)
        for s in subs:
            for sym in s["symbols"]:
                topic_name = s["topic"] if stream == "v2" or s["topic"] != "kline" else (
                    f"kline_{s['interval']}")
                params: dict[str, Any] = {"binary": False}
                if stream == "v2":
                    params["symbol"] = sym
                    if "interval" in s:
                        params["klineType"] = s["interval"]
                    ws.send(json.dumps({"topic": s["topic"], "event": "sub", "params": params}))
                else:
                    ws.send(json.dumps({"symbol": sym, "topic": topic_name, "event": "sub",
                                        "params": params}))
        while not stop.is_set():
            try:
                text = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            now = time.time_ns() // 1_000_000
            event = decode(text, stream, Stamp(now, time.monotonic_ns()))  # type: ignore[arg-type]
            if not hasattr(event, "items"):
                continue
            key = stream + ("kline" if event.topic == "kline" else event.topic)
            kind = _kind({"stream": stream, "topic": event.topic})
            for rec in MAPPERS[kind](event):
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, schemas[key], rec)
                producer.send(topic, key=str(now).encode(), value=buf.getvalue())
        ws.close()

    streams: dict[str, list[dict[str, Any]]] = {}
    for s in sc.subscriptions:
        streams.setdefault(s["stream"], []).append(s)
    threads = [threading.Thread(target=loop, args=(k, v)) for k, v in streams.items()]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(10)
    producer.flush(60)
    cpu = time.process_time() - cpu0
    producer.close()
    end_wall = time.time() * 1000
    msgs = read_all(bootstrap, [topic], timeout=120)[topic]
    latencies = [m.timestamp_ms - int(m.key) for m in msgs if m.key and
                 start_wall <= int(m.key) < end_wall]
    return summarise(sc.name, "naive loop", latencies, seconds, cpu,
                     proc_hwm_mb(os.getpid()), 0)


def _kind(sub: dict[str, Any]) -> str:
    from connector.bybit.topics import lookup

    spec = lookup(sub["stream"], sub["topic"])
    assert spec is not None
    return spec.kind


def run_raw(sc: Scenario, bootstrap: str, seconds: float, topic: str,
            arrivals: list[int] | None = None, replaying: str = "") -> Result:
    """Pre-encoded bytes: flat out, or replaying ``arrivals`` (epoch ms).

    Replaying sends one record per connector record at the same offsets from
    the start, bursts included, so both see the same load at the same rate.
    """
    schema = fastavro.parse_schema(load_schema(sc.kind))
    sample = _sample_record(sc.kind)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, sample)
    value = buf.getvalue()
    producer = KafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)  # type: ignore[arg-type]
    cpu0 = time.process_time()
    start = time.monotonic()
    start_wall = time.time() * 1000
    sent = 0
    if arrivals:
        first = arrivals[0]
        for at in arrivals:
            ahead = start + (at - first) / 1000 - time.monotonic()
            if ahead > 0.0005:
                time.sleep(ahead)
            producer.send(topic, key=str(time.time_ns() // 1_000_000).encode(), value=value)
            sent += 1
    else:
        while time.monotonic() - start < seconds:
            producer.send(topic, key=str(time.time_ns() // 1_000_000).encode(), value=value)
            sent += 1
    producer.flush(60)
    elapsed = seconds if arrivals else time.monotonic() - start
    cpu = time.process_time() - cpu0
    producer.close()
    msgs = read_all(bootstrap, [topic], timeout=120)[topic]
    latencies = [m.timestamp_ms - int(m.key) for m in msgs if m.key and
                 int(m.key) >= start_wall]
    label = f"raw producer (same arrivals as {replaying})" if arrivals else "raw producer"
    return summarise(sc.name, label,
                     latencies, elapsed, cpu, proc_hwm_mb(os.getpid()), sent - len(msgs))


def run_raw_confluent(sc: Scenario, bootstrap: str, seconds: float, topic: str) -> Result:
    """confluent-kafka flat out with the same bytes and settings as ``run_raw``.

    Delivery callbacks are served by ``poll(0)`` after each record (as a
    single-threaded librdkafka application does); a full local queue waits
    for room rather than dropping.
    """
    import confluent_kafka

    schema = fastavro.parse_schema(load_schema(sc.kind))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, _sample_record(sc.kind))
    value = buf.getvalue()
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap,
                                         "partitioner": "murmur2_random",
                                         **LIBRDKAFKA_PRODUCER})
    failed = 0

    def delivered(err: Any, _msg: Any) -> None:
        nonlocal failed
        failed += err is not None

    cpu0 = time.process_time()
    start = time.monotonic()
    start_wall = time.time() * 1000
    sent = 0
    produce, poll = producer.produce, producer.poll
    while time.monotonic() - start < seconds:
        key = str(time.time_ns() // 1_000_000).encode()
        try:
            produce(topic, value, key, on_delivery=delivered)
        except BufferError:
            poll(0.01)
            continue
        poll(0)
        sent += 1
    producer.flush(60)
    elapsed = time.monotonic() - start
    cpu = time.process_time() - cpu0
    msgs = read_all(bootstrap, [topic], timeout=120)[topic]
    latencies = [m.timestamp_ms - int(m.key) for m in msgs if m.key and
                 int(m.key) >= start_wall]
    return summarise(sc.name, "raw producer (confluent-kafka)", latencies, elapsed, cpu,
                     proc_hwm_mb(os.getpid()), sent - len(msgs))


def _sample_record(kind: str) -> dict[str, Any]:
    samples = ROOT / "tests" / "samples"
    name = {"v1_trade": "v1_trade.json", "v2_book_ticker": "v2_bookticker.json",
            "v1_depth": "v1_depth.json"}[kind]
    stream = "v1" if kind.startswith("v1") else "v2"
    event = decode((samples / name).read_text(), stream,  # type: ignore[arg-type]
                   Stamp(time.time_ns() // 1_000_000, 0))
    return MAPPERS[kind](event)[0]  # type: ignore[no-any-return]


@contextlib.contextmanager
def exchange(sc: Scenario) -> Iterator[str]:
    """A fresh local exchange for one run; yields its URL.

    One per run, and none while the raw producers run: the exchange keeps
    every symbol it has served trading whether or not anyone listens (as
    Bybit does), so one left running would spend CPU the next contender
    needs, and each run would start from a different market.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "exchange", "--port", str(port),
         "--rate", str(sc.rate), "--idle-timeout", "600",
         "--trades-per-frame", str(sc.trades_per_frame)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per contender and run")
    parser.add_argument("--scenarios", default="a,b,c,d")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per contender; the table shows the median of each figure")
    parser.add_argument("--contenders", default="connector,naive,raw,raw-confluent",
                        help="which to run (the raw producer replaying the connector's arrivals "
                             "runs with the connector)")
    parser.add_argument("--client", default="kafka-python",
                        help="the connector's Kafka client (its config's kafka.client); a comma "
                             "list runs the connector once per client: "
                             + ", ".join(sorted(CLIENT_SETTINGS)))
    parser.add_argument("--headers", default="full",
                        help="the connector's kafka.headers; a comma list (full,minimal) runs "
                             "it once per mode")
    args = parser.parse_args()
    contenders = set(args.contenders.split(","))
    header_modes = args.headers.split(",")
    clients = args.client.split(",")
    for client in clients:
        if client not in CLIENT_SETTINGS:
            parser.error(f"--client: unknown client {client!r} "
                         f"(choose from {', '.join(sorted(CLIENT_SETTINGS))})")
    runs: list[Result] = []
    with KafkaBroker(extra_properties={"log.message.timestamp.type": "LogAppendTime"}) as broker:
        bootstrap = broker.bootstrap_servers
        for key in args.scenarios.split(","):
            sc = SCENARIOS[key]
            print(f"== {sc.name}: {sc.description}", flush=True)
            for rep in range(args.repeat):
                tag = f"b{key}r{rep}"
                connectors = [(c, h) for c in clients for h in header_modes]
                for client, headers in connectors if "connector" in contenders else ():
                    with exchange(sc) as url:
                        conn, arrivals = run_connector(sc, url, bootstrap, args.seconds,
                                                       f"{tag}{client}{headers}", client, headers)
                    runs.append(conn)
                    print(f"   {conn.contender:<28} {conn.records_per_s:>8.0f} rec/s "
                          f"{conn.cpu_us_per_record:>6.1f} µs/rec", flush=True)
                    runs.append(run_raw(sc, bootstrap, args.seconds,
                                        f"{tag}{client}{headers}.replay", arrivals,
                                        conn.contender.removeprefix("connector (")[:-1]))
                if "naive" in contenders:
                    with exchange(sc) as url:
                        naive = run_naive(sc, url, bootstrap, args.seconds, f"{tag}.naive")
                    runs.append(naive)
                    print(f"   naive loop                   {naive.records_per_s:>8.0f} rec/s "
                          f"{naive.cpu_us_per_record:>6.1f} µs/rec", flush=True)
                if "raw" in contenders:
                    raw = run_raw(sc, bootstrap, args.seconds, f"{tag}.raw")
                    runs.append(raw)
                    print(f"   raw producer                 {raw.records_per_s:>8.0f} rec/s "
                          f"{raw.cpu_us_per_record:>6.1f} µs/rec", flush=True)
                if "raw-confluent" in contenders:
                    rawc = run_raw_confluent(sc, bootstrap, args.seconds, f"{tag}.rawc")
                    runs.append(rawc)
                    print(f"   raw producer (confluent)     {rawc.records_per_s:>8.0f} rec/s "
                          f"{rawc.cpu_us_per_record:>6.1f} µs/rec", flush=True)
    results = medians(runs)
    print_table(results)
    summary = ratios(results)
    print_ratios(summary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}
    (out / "bench.json").write_text(json.dumps(
        {"machine": machine, "seconds": args.seconds, "repeat": args.repeat,
         "clients": clients, "headers": header_modes,
         "results": [asdict(r) for r in results], "ratios": summary,
         "runs": [asdict(r) for r in runs]},
        indent=2))
    print(f"\nwrote {out / 'bench.json'}")
    return 0


def medians(runs: list[Result]) -> list[Result]:
    """One row per (scenario, contender): the median of each figure over its
    runs (the machine is shared, single runs vary by 10-20 %); ``lost`` is the
    sum, so one loss anywhere shows."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.contender), []).append(r)
    rows = []
    for (scenario, contender), rs in groups.items():
        def mid(name: str, rs: list[Result] = rs) -> float:
            return float(statistics.median(getattr(r, name) for r in rs))
        rows.append(Result(scenario, contender, int(mid("records")), mid("seconds"),
                           mid("records_per_s"), mid("p50_ms"), mid("p99_ms"), mid("p999_ms"),
                           mid("cpu_s_per_100k"), mid("peak_rss_mb"), sum(r.lost for r in rs),
                           mid("cpu_us_per_record")))
    return rows


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """The connector against both baselines, per scenario (None where not run)."""
    by = {(r.scenario, r.contender): r for r in results}
    out = []
    for conn in (r for r in results if r.contender.startswith("connector")):
        scenario = conn.scenario
        raw, naive = by.get((scenario, "raw producer")), by.get((scenario, "naive loop"))
        raw_confluent = by.get((scenario, "raw producer (confluent-kafka)"))
        client = conn.contender.removeprefix("connector (")[:-1]
        replay = by.get((scenario, f"raw producer (same arrivals as {client})"))
        out.append({
            "scenario": scenario,
            "connector": conn.contender,
            "throughput_vs_raw": round(conn.records_per_s / raw.records_per_s, 2) if raw else None,
            "throughput_vs_raw_confluent": (
                round(conn.records_per_s / raw_confluent.records_per_s, 2)
                if raw_confluent else None),
            "throughput_vs_naive": (round(conn.records_per_s / naive.records_per_s, 2)
                                    if naive else None),
            "cpu_per_record_vs_naive": (round(conn.cpu_s_per_100k / naive.cpu_s_per_100k, 2)
                                        if naive else None),
            "p99_over_raw_same_arrivals_ms": (conn.p99_ms - replay.p99_ms) if replay else None,
        })
    return out


def print_ratios(summary: list[dict[str, Any]]) -> None:
    def cell(value: Any, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    print()
    print("| scenario | connector | records/s vs raw ceiling | vs raw librdkafka ceiling "
          "| vs naive loop | CPU per record vs naive | p99 over raw (same arrivals) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in summary:
        print(f"| {row['scenario']} | {row['connector']} | "
              f"{cell(row['throughput_vs_raw'], '.0%')} | "
              f"{cell(row['throughput_vs_raw_confluent'], '.0%')} | "
              f"{cell(row['throughput_vs_naive'], '.2f')}x | "
              f"{cell(row['cpu_per_record_vs_naive'], '.2f')}x | "
              f"{cell(row['p99_over_raw_same_arrivals_ms'], '+.0f')} ms |")


def print_table(results: list[Result]) -> None:
    print()
    print("| scenario | contender | records/s | p50 ms | p99 ms | p99.9 ms | CPU s/100k "
          "| CPU µs/record | peak RSS MB | lost |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.scenario} | {r.contender} | {r.records_per_s:,.0f} | {r.p50_ms:.0f} | "
              f"{r.p99_ms:.0f} | {r.p999_ms:.0f} | {r.cpu_s_per_100k:.1f} | "
              f"{r.cpu_us_per_record:.1f} | {r.peak_rss_mb:.0f} | {r.lost} |")


if __name__ == "__main__":
    raise SystemExit(main())
