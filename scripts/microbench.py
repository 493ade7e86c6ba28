"""Micro-benchmarks of the per-record path: CPU µs per record, before and after.

Each section times the old and the new way in the same run (best of
``--rounds`` rounds of ``--n`` records, ``time.process_time``), so a loaded
machine slows both alike:

* ``serde``: a v1 trade and a 50-level book: fastavro (segments) vs the
  compiled writer; and a frame's ten trades without and with their frame
  values written once;
* ``mapping``: one v1 trade item, ``map_item`` vs the compiled ``row_mapper``;
* ``metrics``: the per-record metric updates of one acknowledged record
  (two counters, one histogram): prometheus-client vs ``fastmetrics``;
* ``producers``: ``send`` of a keyed record with 4 headers and callbacks,
  each backend raw and through its adapter, CPU of the whole process
  (client threads included) until every record is acknowledged; starts a
  local broker;
* ``pipeline``: the connector's whole per-record path in one process, without
  the network in front: v1 trade frames (10 trades each, 40 symbols) →
  decode → map → de-duplicate → Avro → sink → producer, CPU of the whole
  process until every record is acknowledged, for each client (``--clients``)
  and ``kafka.headers`` mode (``--headers``), without and with the raw frame
  archive (``--archive off,on``; one archive record per 10-trade frame);
  starts a local broker. ``--profile`` writes a cProfile of the last round;
* ``gc``: a synthetic allocation-heavy record loop over a large start-up
  heap, default collector vs ``runtime.tune_gc()``: CPU per record, p99 per
  record, young and full collection counts and pauses (``gc.callbacks``).

Usage: python scripts/microbench.py [--sections serde,mapping,metrics,producers,pipeline,gc]
       [--n 100000] [--rounds 3] [--clients kafka-python,confluent-kafka]
       [--headers full,minimal] [--archive off,on] [--profile FILE]
"""

from __future__ import annotations

import argparse
import collections
import gc
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connector.records import load_schema  # noqa: E402

TRADE = {"stream": "v1", "bybit_topic": "trade", "symbol": "BTCUSDT",
         "event_time": 1626249138999, "send_time": 1626249139001,
         "receive_time": 1626249139005, "trade_id": "2290000000012345678",
         "price": "33412.53", "quantity": "0.012345", "buyer_is_taker": True, "extra": None,
         "item_symbol": None, "first_message": False, "frame_symbol_name": "BTCUSDT",
         "binary": False, "frame_extra": None}
HEADERS = [("avro.schema.fingerprint", b"0123456789abcdef"), ("bybit.received_ms", b"1"),
           ("bybit.stream", b"v1"), ("bybit.topic", b"trade")]


def cpu_us(fn: Callable[[], None], n: int, rounds: int) -> float:
    """Best CPU µs per call of ``fn`` over ``rounds`` rounds of ``n`` calls."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


def row(label: str, before: float, after: float) -> None:
    print(f"  {label:44s} before {before:7.2f} µs  after {after:7.2f} µs  "
          f"saved {before - after:6.2f} µs ({before / after:4.1f}x)")


def bench_serde(n: int, rounds: int) -> None:
    from connector.serde.serializers import PlainAvroSerializer

    print("serde (CPU µs per record)")
    for kind, record in (("v1_trade", TRADE), ("v1_depth", _book())):
        serializer = PlainAvroSerializer(load_schema(kind))
        body = serializer._body

        def old(body: Any = body, record: dict[str, Any] = record) -> None:
            out = io.BytesIO()
            body.write(out, record)
            out.getvalue()

        def new(serializer: Any = serializer, record: dict[str, Any] = record) -> None:
            serializer(record)

        assert body._compiled(record) is not None, f"{kind}: the sample must fit the schema"

        count = n if kind == "v1_trade" else n // 20
        row(kind, cpu_us(old, count, rounds), cpu_us(new, count, rounds))
    # A frame's 10 trades share their frame's values (the same objects): with
    # `repeated` those fields' bytes are written once per frame.
    from connector.records import repeated_fields

    schema = load_schema("v1_trade")
    plain, cached = PlainAvroSerializer(schema), PlainAvroSerializer(
        schema, repeated_fields("v1_trade"))
    frames = [[{**TRADE, "symbol": sym, "send_time": TRADE["send_time"] + f,
                "receive_time": TRADE["receive_time"] + f, "trade_id": f"{f}{i}"}
               for i in range(10)] for f, sym in enumerate(["BTCUSDT", "ETHUSDT"] * 50)]
    for frame in frames:  # one object per frame value, as the mapper hands them over
        for rec in frame[1:]:
            rec.update((k, frame[0][k]) for k in ("symbol", "send_time", "receive_time"))
    records = [rec for frame in frames for rec in frame]

    def write_all(serializer: Any) -> Callable[[], None]:
        return lambda: [serializer(r) for r in records]

    assert [plain(r) for r in records] == [cached(r) for r in records]
    reps = max(1, n // len(records))
    row("v1_trade, frame values written once per frame",
        cpu_us(write_all(plain), reps, rounds) / len(records),
        cpu_us(write_all(cached), reps, rounds) / len(records))


def bench_mapping(n: int, rounds: int) -> None:
    """One v1 trade item mapped: the generic ``map_item`` vs the compiled ``row_mapper``."""
    from connector.records.mapping import field_plan, map_item, row_mapper

    print("mapping (CPU µs per record)")
    schema = load_schema("v1_trade")
    plan = field_plan(schema)
    known = frozenset({key for _, key, _, _ in plan} | {"s", "symbol"})
    map_row = row_mapper("v1_trade", plan, known)
    item = {"v": "2290000000012345678", "t": 1626249138999, "p": "33412.53", "q": "0.012345",
            "m": True}
    base = {"stream": "v1", "bybit_topic": "trade", "symbol": "BTCUSDT"}
    assert map_item("v1_trade", plan, known, item, dict(base)) == map_row(item, dict(base))
    row("v1 trade item", cpu_us(lambda: map_item("v1_trade", plan, known, item, dict(base)),
                                n, rounds),
        cpu_us(lambda: map_row(item, dict(base)), n, rounds))


def _book() -> dict[str, Any]:
    levels = [{"price": f"{30000 + i}.5", "quantity": f"0.{i:04d}"} for i in range(50)]
    return {"stream": "v1", "bybit_topic": "depth", "symbol": "BTCUSDT",
            "event_time": 1626249138999, "send_time": 1626249139001,
            "receive_time": 1626249139005, "is_snapshot": True, "exchange_id": 301,
            "version": "123_45", "bids": levels, "asks": levels, "update_count": None,
            "extra": None, "item_symbol": None, "first_message": True,
            "frame_symbol_name": "BTCUSDT", "binary": False, "frame_extra": None}


def bench_metrics(n: int, rounds: int) -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from connector.ops.fastmetrics import FastCounter, FastHistogram
    from connector.ops.metrics import LATENCY_BUCKETS

    print("metrics (CPU µs per acknowledged record: 2 counters + 1 histogram)")
    registry = CollectorRegistry()
    c1 = Counter("a_total", "a", ["t"], registry=registry).labels("t")
    c2 = Counter("b_total", "b", ["t"], registry=registry).labels("t")
    h = Histogram("c_seconds", "c", ["t"], buckets=LATENCY_BUCKETS, registry=registry).labels("t")
    f1 = FastCounter("a_total", "a", ["t"], registry=None).labels("t")
    f2 = FastCounter("b_total", "b", ["t"], registry=None).labels("t")
    fh = FastHistogram("c_seconds", "c", ["t"], buckets=LATENCY_BUCKETS,
                       registry=None).labels("t")

    def old() -> None:
        c1.inc()
        c2.inc(120)
        h.observe(0.012)

    def new() -> None:
        f1.inc()
        f2.inc(120)
        fh.observe(0.012)

    row("inc + inc + observe", cpu_us(old, n, rounds), cpu_us(new, n, rounds))
    row("Counter.inc", cpu_us(c1.inc, n, rounds), cpu_us(f1.inc, n, rounds))
    row("Histogram.observe", cpu_us(lambda: h.observe(0.012), n, rounds),
        cpu_us(lambda: fh.observe(0.012), n, rounds))


def bench_producers(n: int, rounds: int) -> None:
    import confluent_kafka
    from kafka import KafkaProducer

    from connector.config.model import KafkaConfig
    from connector.dev.kafka_broker import KafkaBroker
    from connector.sink.producers import create_producer
    from connector.sink.producers.confluent import producer_settings as rd_settings
    from connector.sink.producers.kafka_python import producer_settings as kp_settings

    print("producers (CPU µs per record, whole process, send until all acknowledged)")
    value = b"x" * 90
    with KafkaBroker() as broker:
        config = KafkaConfig(bootstrap_servers=[broker.bootstrap_servers],
                             max_pending_records=n + 10)

        def measure(send_all: Callable[[str], None], label: str) -> float:
            send_all("warm")
            best = float("inf")
            for r in range(rounds):
                start = time.process_time()
                send_all(f"bench.{label}.{r}")
                best = min(best, (time.process_time() - start) / n * 1e6)
            return best

        acks = collections.Counter()

        def on_ack(_partition: int, _offset: int) -> None:
            acks["ok"] += 1

        def on_error(_exc: Exception) -> None:
            acks["error"] += 1

        raw_kp = KafkaProducer(**kp_settings(config))

        def kp_raw(topic: str) -> None:
            for i in range(n):
                future = raw_kp.send(topic, value=value, key=b"S%04dUSDT" % (i % 40),
                                     headers=HEADERS)
                future.add_callback(on_ack, 0)
                future.add_errback(on_error)
            raw_kp.flush(120)

        kp_raw_us = measure(kp_raw, "kp_raw")
        raw_kp.close()
        kp = create_producer("kafka-python", config)

        def kp_adapter(topic: str) -> None:
            for i in range(n):
                kp.send(topic, b"S%04dUSDT" % (i % 40), value, HEADERS, on_ack, on_error)
            kp.flush(120)

        kp_adapter_us = measure(kp_adapter, "kp_adapter")
        kp.close(10)

        settings = rd_settings(config)
        settings.pop("statistics.interval.ms")
        raw_rd = confluent_kafka.Producer(settings)

        def delivered(err: Any, msg: Any) -> None:
            acks["ok" if err is None else "error"] += 1

        def rd_raw(topic: str) -> None:
            for i in range(n):
                raw_rd.produce(topic, value, b"S%04dUSDT" % (i % 40), on_delivery=delivered,
                               headers=HEADERS)
                raw_rd.poll(0)
            raw_rd.flush(120)

        rd_raw_us = measure(rd_raw, "rd_raw")
        rd = create_producer("confluent-kafka", config)

        def rd_adapter(topic: str) -> None:
            for i in range(n):
                rd.send(topic, b"S%04dUSDT" % (i % 40), value, HEADERS, on_ack, on_error)
            rd.flush(120)

        rd_adapter_us = measure(rd_adapter, "rd_adapter")
        rd.close(10)
        row("kafka-python raw -> adapter", kp_raw_us, kp_adapter_us)
        row("confluent-kafka raw -> adapter", rd_raw_us, rd_adapter_us)
        row("kafka-python adapter -> confluent adapter", kp_adapter_us, rd_adapter_us)
        print(f"  callbacks: {dict(acks)}")


def trade_frames(n_records: int, per_frame: int = 10, symbols: int = 40,
                 first_id: int = 2_290_000_000_000_000_000) -> list[str]:
    """v1 trade frames as the exchange sends them, with unique trade ids."""
    import json

    frames, trade_id, now = [], first_id, int(time.time() * 1000)
    for f in range(n_records // per_frame):
        sym = f"S{f % symbols:04d}USDT"
        data = []
        for _ in range(per_frame):
            trade_id += 1
            data.append({"v": str(trade_id), "t": now, "p": "33412.53", "q": "0.012345",
                         "m": trade_id % 2 == 0})
        frames.append(json.dumps({"symbol": sym, "symbolName": sym, "topic": "trade",
                                  "params": {"realtimeInterval": "24h", "binary": "false"},
                                  "data": data, "f": False, "sendTime": now}))
    return frames


def bench_pipeline(n: int, rounds: int, clients: list[str], profile: str | None,
                   header_modes: list[str], archive_modes: Sequence[str] = ("off",)) -> None:
    """CPU µs per record of decode → pipeline → sink → producer → acknowledged."""
    import cProfile

    from connector.archive.writer import Archive, archive_topics
    from connector.bybit.events import Stamp
    from connector.bybit.legacy.frames import decode
    from connector.config.load import loads
    from connector.dev.kafka_broker import KafkaBroker
    from connector.ops.runtime import tune_gc
    from connector.pipeline.core import Pipeline, build_routes
    from connector.service import serializer_factory
    from connector.sink.kafka_sink import KafkaSink

    print("pipeline (CPU µs per record, whole process, frames until all acknowledged)")
    tune_gc()
    with KafkaBroker() as broker:
        for client, headers, archived in ((c, h, a) for c in clients for h in header_modes
                                          for a in archive_modes):
            best = float("inf")
            for r in range(rounds + 1):  # round 0 warms up (metadata, first batches)
                text = f"""
kafka:
  bootstrap_servers: ["{broker.bootstrap_servers}"]
  client: {client}
  headers: {headers}
  topic_template: "mb{r}.{client}.{headers}.{archived}.{{stream}}.{{topic}}"
  max_pending_records: {2 * n + 100}
archive:
  enabled: {"true" if archived == "on" else "false"}
  topic_template: "mb{r}.{client}.{headers}.raw.{{stream}}"
subscriptions: [{{stream: v1, topic: trade, symbols: {[f"S{i:04d}USDT" for i in range(40)]}}}]
"""
                config = loads(text, env={})
                frames = trade_frames(n, first_id=2_290_000_000_000_000_000 + r * 10 * n)
                with KafkaSink(config.kafka, warm_topics=[config.kafka_topic(
                        config.subscriptions[0]), *archive_topics(config)]) as sink:
                    serializer_for = serializer_factory(config)
                    archive = (Archive(config, serializer_for, sink)
                               if archive_topics(config) else None)
                    pipeline = Pipeline(build_routes(config, serializer_for), sink,
                                        archive=archive)
                    prof = cProfile.Profile() if profile and r == rounds else None
                    start = time.process_time()
                    if prof:
                        prof.enable()
                    for frame in frames:
                        stamp = Stamp(time.time_ns() // 1_000_000, time.monotonic_ns())
                        pipeline.handle(decode(frame, "v1", stamp))
                    left = sink.flush(120)
                    spent = time.process_time() - start
                    if prof:
                        prof.disable()
                        prof.dump_stats(profile)  # type: ignore[arg-type]
                    assert left == 0, f"{left} records not acknowledged"
                if r:
                    best = min(best, spent / n * 1e6)
            label = f"{client}, headers: {headers}" + (", archive on" if archived == "on" else "")
            print(f"  {label:44s} {best:7.2f} µs per trade record")


def bench_gc(n: int, rounds: int) -> None:
    from connector.ops.runtime import restore_gc, tune_gc

    print("gc (synthetic record loop over a large start-up heap)")
    startup = [{"k": [i, str(i)], "v": (i, i + 1)} for i in range(600_000)]

    def loop(label: str) -> None:
        pauses: list[tuple[int, float]] = []
        began = [0.0]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                pauses.append((info["generation"], time.perf_counter() - began[0]))

        gc.callbacks.append(callback)
        inflight: list[Any] = []
        recent: collections.OrderedDict[int, list[Any]] = collections.OrderedDict()
        latencies = []
        start = time.process_time()
        for i in range(n):
            t = time.perf_counter()
            record = {**TRADE, "event_time": i, "price": str(i), "h": list(HEADERS)}
            inflight.append([record, (i, record["h"])])  # awaiting its batch's ack
            recent[i] = [i, record["price"]]  # a bounded dedup window: outlives batches
            if len(recent) > 20_000:
                recent.popitem(last=False)
            if len(inflight) >= 2_000:
                inflight = []
            latencies.append(time.perf_counter() - t)
        cpu = (time.process_time() - start) / n * 1e6
        gc.callbacks.remove(callback)
        latencies.sort()
        young = [p for g, p in pauses if g < 2]
        full = [p for g, p in pauses if g == 2]
        p99 = latencies[int(.99 * n)] * 1e6
        young_ms = statistics.mean(young) * 1e3 if young else 0.0
        full_ms = max(full) * 1e3 if full else 0.0
        print(f"  {label:28s} CPU {cpu:6.2f} µs/record  p99 {p99:6.1f} µs"
              f"  young {len(young):5d} (mean {young_ms:.2f} ms)"
              f"  full {len(full):3d} (max {full_ms:.1f} ms)")

    loop("default thresholds")
    tuning = tune_gc()
    try:
        loop(f"tune_gc {tuning.thresholds}")
    finally:
        restore_gc(tuning)
    del startup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="serde,mapping,metrics,gc")
    parser.add_argument("--n", type=int, default=100_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="kafka-python,confluent-kafka",
                        help="pipeline: the Kafka clients to run it with")
    parser.add_argument("--headers", default="full",
                        help="pipeline: kafka.headers modes to run (full, minimal)")
    parser.add_argument("--profile", help="pipeline: write a cProfile of the last round here")
    parser.add_argument("--archive", default="off",
                        help="pipeline: raw frame archive modes to run (off, on)")
    args = parser.parse_args()
    sections: dict[str, Callable[[int, int], None]] = {
        "serde": bench_serde, "metrics": bench_metrics, "producers": bench_producers,
        "mapping": bench_mapping, "gc": bench_gc,
        "pipeline": lambda n, rounds: bench_pipeline(n, rounds, args.clients.split(","),
                                                     args.profile, args.headers.split(","),
                                                     args.archive.split(","))}
    for name in args.sections.split(","):
        sections[name](args.n if name != "gc" else max(args.n, 300_000), args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
