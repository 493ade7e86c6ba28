"""The book guarantee whatever happens to a frame, against a real Kafka broker,
with both Kafka clients.

1. The local exchange spoils book deltas on the wire (a delta without ``a``,
   one with a level that is no pair, one cut off halfway): each breaks its
   book's chain (marker ``dead_letter``, resubscribe, snapshot), and the book
   rebuilt from Kafka equals the exchange's at every record.
2. Kafka refuses a book delta (too large for its topic) after later deltas
   were sent: a ``delivery_failed`` marker naming it follows them, the book
   resyncs.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from connector.bybit.events import Stamp
from connector.bybit.v5.frames import decode
from connector.config.load import loads
from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer
from connector.pipeline.core import Pipeline, build_routes
from connector.records import load_schema
from connector.serde.serializers import PlainAvroSerializer
from connector.service import Connector
from connector.sink.kafka_sink import KafkaSink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_end_to_end import kafka_client  # noqa: F401 (fixture: both clients)
from test_end_to_end_v5 import (
    Book,
    rebuild,
    sample,
    settle_quiet,
    subscribed,
    unique,
    wait,
)

pytestmark = pytest.mark.integration

BOOKS = (("BTCUSDT", 50), ("BTCUSDT", 200), ("ETHUSDT", 50))
FAULTS = {("BTCUSDT", 50): "missing_asks", ("BTCUSDT", 200): "truncated",
          ("ETHUSDT", 50): "bad_level"}


def config_for(exchange_url: str, bootstrap: str, prefix: str, client: str) -> Any:
    return loads(f"""
bybit:
  urls: {{v5: {exchange_url}/v5/public/spot}}
  ping_interval_seconds: 1
kafka:
  client: {client}
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{enabled: false}}
subscriptions:
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT, ETHUSDT]}}
  - {{stream: v5, topic: orderbook, depth: 200, symbols: [BTCUSDT]}}
""", env={})


def resyncs(depth: int, reason: str = "dead_letter") -> float:
    return sample("book_resyncs_total", {"stream": "v5", "topic": f"orderbook.{depth}",
                                         "reason": reason})


def test_spoilt_book_frames_resync_and_the_rebuilt_book_is_right(
        kafka_broker: KafkaBroker, kafka_client: str) -> None:  # noqa: F811
    prefix = unique("chain")
    with ExchangeServer(port=0, rate=20, record_frames=200_000) as exchange:
        config = config_for(exchange.url, kafka_broker.bootstrap_servers, prefix, kafka_client)
        before = {depth: resyncs(depth) for depth in (50, 200)}
        connector = Connector(config).start()
        try:
            wait(lambda: subscribed(connector), what="every book subscribed")
            time.sleep(1.0)
            for (symbol, depth), mode in FAULTS.items():
                assert exchange.v5.corrupt(symbol, depth, mode) == 1
            wait(lambda: resyncs(50) - before[50] >= 2 and resyncs(200) - before[200] >= 1,
                 what="a dead_letter resync of every spoilt book")
            wait(lambda: subscribed(connector), what="resubscribed")
            time.sleep(1.0)
            settle_quiet(exchange, config)
            truths = {(s, d): _history(exchange, s, d) for s, d in BOOKS}
        finally:
            connector.stop()
    topics = [f"{prefix}.v5.orderbook.{d}" for d in (50, 200)]
    messages = read_all(kafka_broker.bootstrap_servers, [*topics, f"{prefix}.dead-letter"],
                        timeout=60)
    decoder = AvroDecoder()
    markers: Counter[tuple[str, int, str]] = Counter()
    compared = 0
    for symbol, depth in BOOKS:
        recs = [decoder.decode("v5_orderbook", m)
                for m in sorted(messages[f"{prefix}.v5.orderbook.{depth}"],
                                key=lambda m: m.offset) if m.key == symbol.encode()]
        # rebuild() fails on any delta applied while the book is discarded, and on
        # any record whose rebuilt book differs from the exchange's at its update id.
        compared += rebuild(recs, ["price", "quantity"], [truths[(symbol, depth)]],
                            f"{symbol}.{depth}")
        for i, r in enumerate(recs):
            if r["resync_reason"] and not r["is_snapshot"]:
                markers[(symbol, depth, r["resync_reason"])] += 1
                assert recs[i + 1]["is_snapshot"], "a snapshot follows the marker"
                assert recs[i + 1]["resync_reason"] == r["resync_reason"]
    assert markers == {(s, d, "dead_letter"): 1 for s, d in BOOKS}
    assert compared > 100
    dead = Counter(dict(m.headers)["dlq.reason"].decode()
                   for m in messages[f"{prefix}.dead-letter"])
    assert dead == {"mapping_failed": 2, "undecodable_frame": 1}


def _history(exchange: ExchangeServer, symbol: str, depth: int) -> dict[int, Book]:
    lo, hi = exchange.v5.book_span(symbol, depth)
    return {u: exchange.v5.book_at(symbol, depth, u) for u in range(lo, hi + 1)}


# -- a record Kafka refuses after later ones were sent ---------------------------------------


def _frame(kind: str, u: int, bids: list[list[str]]) -> Any:
    text = json.dumps({"topic": "orderbook.50.BTCUSDT", "ts": 1796391446000 + u, "type": kind,
                       "data": {"s": "BTCUSDT", "b": bids, "a": [], "u": u, "seq": 1000 + u},
                       "cts": 1796391446000 + u})
    return decode(text, "v5", Stamp(1796391447000, time.monotonic_ns()))


def test_a_book_record_kafka_refuses_is_followed_by_a_delivery_failed_marker(
        kafka_broker: KafkaBroker, kafka_client: str) -> None:  # noqa: F811
    prefix = unique("chainkafka")
    topic = f"{prefix}.v5.orderbook.50"
    config = config_for("ws://127.0.0.1:9", kafka_broker.bootstrap_servers, prefix,
                        kafka_client)
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:  # records over 4 KB are refused by the broker (MESSAGE_TOO_LARGE)
        admin.create_topics([NewTopic(topic, 1, 1,
                                      topic_configs={"max.message.bytes": "4096"})])
    finally:
        admin.close()
    asked: list[tuple[str, str, str]] = []
    # stall_seconds: kafka-python fails every later record of the partition after a
    # refused batch until the sink replaces its producer (no acknowledgement for that long).
    with KafkaSink(config.kafka, warm_topics=[topic], stall_seconds=2.0) as sink:
        routes = build_routes(config, lambda kind, _t: PlainAvroSerializer(load_schema(kind)))
        pipe = Pipeline(routes, sink, resubscribe=lambda *a: asked.append(a))
        sink.on_lost = pipe.record_lost
        before = resyncs(50, "delivery_failed")
        pipe.expect_snapshot("v5", [("orderbook.50", "BTCUSDT")])
        pipe.handle(_frame("snapshot", 10, [["1.00", "1"]]))
        assert sink.flush(30) == 0  # landed before the refused record is sent
        # ~40 KB that compression cannot shrink below the topic's limit
        big = [[f"{i}.00", os.urandom(16).hex()] for i in range(2, 1000)]
        pipe.handle(_frame("delta", 11, big))
        u = 12
        while not pipe.lost_pending() and u < 400:  # the watchdog reports the refusal
            pipe.handle(_frame("delta", u, [["1.00", str(u)]]))
            u += 1
            time.sleep(0.02)
        assert pipe.lost_pending(), "the refused record was reported"
        for _ in range(40):  # answer it (and a marker refused in turn) on the next frames
            pipe.handle(_frame("delta", u, [["1.00", str(u)]]))
            u += 1
            assert sink.flush(30) == 0
            # The watchdog reports a refusal within about 0.5 s; on a busy machine later.
            # Done once several times that passed without one.
            time.sleep(0.7)
            quiet_until = time.monotonic() + 3.0
            while not pipe.lost_pending() and time.monotonic() < quiet_until:
                time.sleep(0.05)
            if not pipe.lost_pending():
                break
        assert not pipe.lost_pending()
        assert asked == [("v5", "orderbook.50", "BTCUSDT")]  # one resubscribe
        assert resyncs(50, "delivery_failed") >= before + 1
    messages = read_all(kafka_broker.bootstrap_servers, [topic, f"{prefix}.dead-letter"],
                        timeout=30)
    schema = fastavro.parse_schema(load_schema("v5_orderbook"))
    recs = [fastavro.schemaless_reader(io.BytesIO(m.value), schema)  # type: ignore[misc]
            for m in messages[topic]]
    got = [(r["update_id"], r["is_snapshot"], r["resync_reason"]) for r in recs]
    assert got[0] == (10, True, None)
    # Deltas sent before the refusal was known landed, except those Kafka refused with
    # it (a client may fail the records queued behind a refused batch): then the
    # marker, written again until it lands. Nothing after it: no snapshot was sent.
    markers = [i for i, (_, _, reason) in enumerate(got) if reason == "delivery_failed"]
    assert markers, got
    first = markers[0]
    landed = got[1:first]
    assert [n for n, _, _ in landed] == sorted(n for n, _, _ in landed), got
    assert set(landed) <= {(n, False, None) for n in range(12, u)}, got
    # Then only markers. The first names a lost record: delta 11 (cross_seq 1011) or,
    # when the client reported a delta refused with it first, one after it. Either way
    # no delta written after the loss escapes it: every landed delta has a cross_seq at
    # or above the marker's, so the consumer's rule marks all of them unknown.
    declared = recs[first]["cross_seq"]
    assert 1011 <= declared <= min((1000 + n for n, _, _ in landed), default=declared), got
    assert all(r["resync_reason"] == "delivery_failed" and not r["is_snapshot"]
               and r["cross_seq"] >= 1011 for r in recs[first:]), got[first:]
