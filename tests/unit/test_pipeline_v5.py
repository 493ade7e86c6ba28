"""The pipeline's v5 path: routing, book continuity with resync markers,
de-duplication, headers and lag. The first tests use tiny stand-in mappers and
a recording sink (no Kafka: nothing here is about delivery); the last ones run
the real v5 mappers from ``records.MAPPERS`` and are skipped until they exist."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connector import records
from connector.bybit.events import Stamp, V5Data
from connector.bybit.v5.frames import decode
from connector.pipeline import core as pipeline_module
from connector.pipeline.core import Pipeline, Route

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, Any], dict[str, bytes]]] = []
        self.dead: list[tuple[str, str]] = []

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        self.sent.append((topic, key, json.loads(value), dict(headers)))
        return True

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.dead.append((reason, source))

    def records(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [rec for t, _, rec, _ in self.sent if topic is None or t == topic]


class JsonSerializer:
    headers: list[tuple[str, bytes]] = []

    def __call__(self, rec: dict[str, Any]) -> bytes:
        return json.dumps(rec).encode()


def book_mapper(data: V5Data) -> list[dict[str, Any]]:
    item = data.items[0]
    return [{"symbol": data.symbol, "is_snapshot": data.type == "snapshot",
             "update_id": item["u"], "bids": item.get("b", []), "resync_reason": None}]


def item_mapper(data: V5Data) -> list[dict[str, Any]]:
    return [{"symbol": item.get("s", item.get("symbol", "")),
             "trade_id": item.get("i"), "exec_id": item.get("execId")} for item in data.items]


def route(stream: str, topic_id: str, mapper: Any, dedup: str | None = None,
          book: bool = False) -> Route:
    return Route(stream=stream, topic_id=topic_id, kind="v5_orderbook" if book else "v5_x",
                 kafka_topic=f"bybit.spot.{stream}.{topic_id}", mapper=mapper,
                 serializer=JsonSerializer(),  # type: ignore[arg-type]
                 headers=[("bybit.stream", stream.encode()), ("bybit.topic", topic_id.encode())],
                 dedup_field=dedup, book=book)


def marker(kind: str, data: V5Data, reason: str) -> dict[str, Any]:
    return {"symbol": data.symbol, "is_snapshot": False, "update_id": data.items[0]["u"],
            "bids": [], "resync_reason": reason}


def book_frame(kind: str, u: int, seq: int | None = None, symbol: str = "BTCUSDT",
               depth: int = 50) -> V5Data:
    data: dict[str, Any] = {"s": symbol, "b": [["1", "1"]], "a": [], "u": u}
    if seq is not None:
        data["seq"] = seq
    raw = json.dumps({"topic": f"orderbook.{depth}.{symbol}", "ts": 1760000005000,
                      "type": kind, "data": data, "cts": 1760000004999})
    event = decode(raw, "v5", Stamp(1760000005100, 1))
    assert isinstance(event, V5Data)
    return event


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, RecordingSink, list[tuple]]:
    monkeypatch.setattr(pipeline_module, "_resync_marker", marker)
    sink = RecordingSink()
    asked: list[tuple] = []
    pipe = Pipeline({("v5", "orderbook.50"): route("v5", "orderbook.50", book_mapper,
                                                    book=True)},
                    sink, resubscribe=lambda *a: asked.append(a))  # type: ignore[arg-type]
    return pipe, sink, asked


def test_gap_writes_a_marker_resubscribes_and_tags_the_next_snapshot(books: Any) -> None:
    pipe, sink, asked = books
    labels = {"stream": "v5", "topic": "orderbook.50"}
    before = metric("bybit_connector_book_resyncs_total", **labels, reason="gap")
    for event in (book_frame("snapshot", 100), book_frame("delta", 101),
                  book_frame("delta", 104),  # gap: 102, 103 lost
                  book_frame("delta", 105),  # dropped until the snapshot
                  book_frame("snapshot", 900), book_frame("delta", 901)):
        pipe.handle(event)
    recs = sink.records()
    assert [(r["is_snapshot"], r["update_id"], r["resync_reason"]) for r in recs] == [
        (True, 100, None), (False, 101, None), (False, 104, "gap"), (True, 900, "gap"),
        (False, 901, None)]
    assert recs[2]["bids"] == []  # a naive consumer applying the marker changes nothing
    assert asked == [("v5", "orderbook.50", "BTCUSDT")]
    assert metric("bybit_connector_book_resyncs_total", **labels, reason="gap") == before + 1


def test_out_of_order_seq_resyncs(books: Any) -> None:
    pipe, sink, asked = books
    for event in (book_frame("snapshot", 100, 50), book_frame("delta", 101, 40)):
        pipe.handle(event)
    assert [r["resync_reason"] for r in sink.records()] == [None, "out_of_order"]
    assert len(asked) == 1


def test_stale_and_early_deltas_are_dropped_and_counted(books: Any) -> None:
    pipe, sink, asked = books
    labels = {"stream": "v5", "topic": "orderbook.50"}
    stale = metric("bybit_connector_book_deltas_dropped_total", **labels, reason="stale")
    early = metric("bybit_connector_book_deltas_dropped_total", **labels,
                   reason="before_snapshot")
    for event in (book_frame("delta", 7), book_frame("snapshot", 100), book_frame("delta", 101),
                  book_frame("delta", 101), book_frame("delta", 99)):
        pipe.handle(event)
    assert [r["update_id"] for r in sink.records()] == [100, 101]
    assert not asked
    assert metric("bybit_connector_book_deltas_dropped_total", **labels,
                  reason="stale") == stale + 2
    assert metric("bybit_connector_book_deltas_dropped_total", **labels,
                  reason="before_snapshot") == early + 1


def test_after_a_resubscribe_or_reconnect_the_first_record_is_a_snapshot(books: Any) -> None:
    pipe, sink, _ = books
    pipe.handle(book_frame("snapshot", 100))
    pipe.handle(book_frame("delta", 101))
    pipe.expect_snapshot("v5", [("orderbook.50", "BTCUSDT")])  # the connection resubscribes
    pipe.handle(book_frame("delta", 102))
    pipe.handle(book_frame("snapshot", 5))
    pipe.handle(book_frame("delta", 6))
    assert [(r["is_snapshot"], r["update_id"]) for r in sink.records()] == [
        (True, 100), (False, 101), (True, 5), (False, 6)]


def test_u1_restart_snapshot_is_written(books: Any) -> None:
    pipe, sink, asked = books
    for event in (book_frame("snapshot", 28750112), book_frame("delta", 28750113),
                  book_frame("snapshot", 1), book_frame("delta", 2)):
        pipe.handle(event)
    assert [r["update_id"] for r in sink.records()] == [28750112, 28750113, 1, 2]
    assert not asked


def test_routing_headers_key_lag_and_unrouted() -> None:
    sink = RecordingSink()
    pipe = Pipeline({("v5", "publicTrade"): route("v5", "publicTrade", item_mapper,
                                                   dedup="trade_id")}, sink)
    trades = decode((SAMPLES / "publicTrade_spot.json").read_text(), "v5", Stamp(1760000006000, 1))
    before = metric("bybit_connector_unrouted_events_total", stream="v5", topic="tickers")
    pipe.handle(trades)
    pipe.handle(decode((SAMPLES / "tickers_spot.json").read_text(), "v5", Stamp(1, 1)))
    assert metric("bybit_connector_unrouted_events_total", stream="v5",
                  topic="tickers") == before + 1
    topic, key, _rec, headers = sink.sent[0]
    assert topic == "bybit.spot.v5.publicTrade" and key == b"BTCUSDT"
    assert headers["bybit.stream"] == b"v5" and headers["bybit.topic"] == b"publicTrade"
    assert headers["bybit.received_ms"] == b"1760000006000"
    assert metric("bybit_connector_event_lag_seconds_count", stream="v5",
                  topic="publicTrade") >= 1


def test_public_trades_are_deduplicated_per_symbol_by_trade_id() -> None:
    sink = RecordingSink()
    pipe = Pipeline({("v5", "publicTrade"): route("v5", "publicTrade", item_mapper,
                                                   dedup="trade_id")}, sink)
    raw = (SAMPLES / "publicTrade_spot.json").read_text()
    before = metric("bybit_connector_duplicates_suppressed_total", stream="v5",
                    topic="publicTrade")
    pipe.handle(decode(raw, "v5", Stamp(1, 1)))
    n = len(sink.sent)
    pipe.handle(decode(raw, "v5", Stamp(2, 2)))  # the same trades again
    assert len(sink.sent) == n >= 2
    assert metric("bybit_connector_duplicates_suppressed_total", stream="v5",
                  topic="publicTrade") == before + n


def test_fills_are_deduplicated_per_route() -> None:
    sink = RecordingSink()
    pipe = Pipeline({
        ("v5-private", "execution.spot"): route("v5-private", "execution.spot", item_mapper,
                                                dedup="exec_id"),
        ("v5-private", "execution.fast.spot"): route("v5-private", "execution.fast.spot",
                                                     item_mapper, dedup="exec_id")}, sink)
    slow = (SAMPLES / "execution_spot.json").read_text()
    fast = (SAMPLES / "execution_fast_spot.json").read_text()
    for raw in (slow, slow, fast, fast):
        pipe.handle(decode(raw, "v5-private", Stamp(1, 1)))
    topics = [t for t, *_ in sink.sent]
    # each fill once per Kafka topic: the fast and full streams are different topics
    assert topics.count("bybit.spot.v5-private.execution.spot") == len(
        json.loads(slow)["data"])
    assert topics.count("bybit.spot.v5-private.execution.fast.spot") == len(
        json.loads(fast)["data"])


# -- with the real v5 mappers (skipped until records/v5 provides them) ---------------

needs_mappers = pytest.mark.skipif("v5_orderbook" not in records.MAPPERS,
                                   reason="v5 mappers not available yet")


@needs_mappers
def test_real_book_mapper_gap_marker_and_tagged_snapshot() -> None:
    from connector.config.load import loads
    from connector.pipeline.core import build_routes
    from connector.service import serializer_factory
    config = loads('kafka: {bootstrap_servers: ["127.0.0.1:9092"]}\nsubscriptions:\n'
                   '  - {stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT]}\n')
    routes = build_routes(config, serializer_factory(config))
    sink = RecordingSink()
    sink.send = lambda t, k, v, h, m, ref=None: sink.sent.append((t, k, {"raw": v}, dict(h)))  # type: ignore[method-assign]
    asked: list[tuple] = []
    pipe = Pipeline(routes, sink, resubscribe=lambda *a: asked.append(a))  # type: ignore[arg-type]
    snap = decode((SAMPLES / "orderbook_50_snapshot.json").read_text(), "v5", Stamp(1, 1))
    assert isinstance(snap, V5Data)
    u, seq = snap.items[0]["u"], snap.items[0]["seq"]
    pipe.handle(snap)
    pipe.handle(book_frame("delta", u + 5, seq + 10, depth=50))
    assert len(sink.sent) == 2 and asked == [("v5", "orderbook.50", "BTCUSDT")]
    assert sink.dead == []
    mapped = records.MAPPERS["v5_orderbook"](snap)
    assert mapped[0]["is_snapshot"] is True and mapped[0]["update_id"] == u


@pytest.mark.parametrize("headers", ["full", "minimal"])
def test_kafka_headers_full_or_minimal(headers: str) -> None:
    """``kafka.headers: minimal`` keeps only what decoding needs (the schema
    fingerprint); the record still holds stream, topic and receive time."""
    from connector.config.load import loads
    from connector.pipeline.core import build_routes
    from connector.serde.serializers import FINGERPRINT_HEADER
    from connector.service import serializer_factory
    config = loads(f'kafka: {{bootstrap_servers: ["127.0.0.1:9092"], headers: {headers}}}\n'
                   'subscriptions:\n  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}\n'
                   '  - {stream: v1, topic: trade, symbols: [BTCUSDT]}\n')
    sink = RecordingSink()
    sink.send = lambda t, k, v, h, m, ref=None: sink.sent.append((t, k, {"raw": v}, dict(h)))  # type: ignore[method-assign]
    pipe = Pipeline(build_routes(config, serializer_factory(config)), sink)  # type: ignore[arg-type]
    pipe.handle(decode((SAMPLES / "publicTrade_spot.json").read_text(), "v5",
                       Stamp(1760000006000, 1)))
    from connector.bybit.legacy.frames import decode as legacy_decode
    legacy = (Path(__file__).resolve().parents[1] / "samples" / "v1_trade.json").read_text()
    pipe.handle(legacy_decode(legacy, "v1", Stamp(1760000007000, 1)))
    assert {t for t, *_ in sink.sent} == {"bybit.spot.v5.publicTrade", "bybit.spot.v1.trade"}
    for _topic, _key, _value, got in sink.sent:
        if headers == "full":
            assert set(got) == {"bybit.stream", "bybit.topic", "bybit.received_ms",
                                FINGERPRINT_HEADER}
        else:
            assert set(got) == {FINGERPRINT_HEADER}


def test_kafka_headers_must_be_full_or_minimal() -> None:
    from connector.config.load import loads
    from connector.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        loads('kafka: {headers: small}\nsubscriptions: [{stream: v1, topic: trade, '
              'symbols: [BTCUSDT]}]\n')
    assert "kafka.headers" in str(err.value)


def test_event_lag_is_counted_from_every_connection_thread() -> None:
    """Lag children are per thread (lock-free, one writer each): observations
    from two connection threads of one topic both reach the scrape."""
    import threading
    sink = RecordingSink()
    pipe = Pipeline({("v5", "publicTrade"): route("v5", "publicTrade", item_mapper)}, sink)
    text = (SAMPLES / "publicTrade_spot.json").read_text()
    before = metric("bybit_connector_event_lag_seconds_count", stream="v5", topic="publicTrade")
    threads = [threading.Thread(target=lambda: [pipe.handle(decode(text, "v5", Stamp(1, 1)))
                                                for _ in range(50)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = len(decode(text, "v5", Stamp(1, 1)).items)  # type: ignore[union-attr]
    assert metric("bybit_connector_event_lag_seconds_count", stream="v5",
                  topic="publicTrade") == before + 100 * n
