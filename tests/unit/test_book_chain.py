"""The book guarantee whatever happens to a frame, without sockets or Kafka.

After every record of a v5 book topic, the book a consumer rebuilds from the
records (the README's recipe) equals Bybit's book at that ``update_id``, or a
marker has said it is unknown until the next snapshot. These tests run the
real decoder, continuity check, mappers and Avro serializer; the sink only
records what would reach Kafka (delivery itself is tested against a broker),
and can refuse a record (the pending-records bound) or report it refused
later (a Kafka delivery error), as ``sink.KafkaSink`` does.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from connector.bybit.books import LOST_REASONS, book_in_raw, missing_side
from connector.bybit.events import Stamp
from connector.bybit.v5.frames import decode
from connector.config.load import loads
from connector.ops import metrics
from connector.pipeline.core import Pipeline, build_routes
from connector.records import load_schema
from connector.serde.serializers import PlainAvroSerializer

SYMBOL, TOPIC_ID = "XRPUSDT", "orderbook.50"
KAFKA_TOPIC = "bybit.spot.v5.orderbook.50"
CONFIG = loads('kafka: {bootstrap_servers: ["127.0.0.1:9092"]}\nsubscriptions:\n'
               f'  - {{stream: v5, topic: orderbook, depth: 50, symbols: [{SYMBOL}]}}\n')
SCHEMA = fastavro.parse_schema(load_schema("v5_orderbook"))
Levels = dict[str, str]


@dataclass
class Sent:
    value: bytes
    ref: object
    landed: bool = True


@dataclass
class ModelSink:
    """What reaches Kafka, in order. ``refuse_next``: the pending bound drops
    the next record; ``fail_next``: Kafka refuses the next record, reported
    ``fail_after`` sends later (the watchdog's report comes after later records)."""

    log: list[Sent] = field(default_factory=list)
    dead: list[tuple[str, str]] = field(default_factory=list)
    refuse_next: bool = False
    fail_next: bool = False
    fail_after: int = 2
    failing: list[tuple[Sent, int]] = field(default_factory=list)
    on_lost: Callable[[object, str], None] | None = None

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        assert topic == KAFKA_TOPIC and key == SYMBOL.encode()
        if self.refuse_next:
            self.refuse_next = False
            return False
        sent = Sent(value, ref)
        self.log.append(sent)
        self.failing = [(s, n - 1) for s, n in self.failing]
        if self.fail_next:
            self.fail_next = False
            self.failing.append((sent, self.fail_after))
        self.report(due_only=True)
        return True

    def report(self, due_only: bool = False) -> None:
        due = [s for s, n in self.failing if n <= 0 or not due_only]
        self.failing = [(s, n) for s, n in self.failing if s not in due]
        for sent in due:
            sent.landed = False
            assert self.on_lost is not None
            self.on_lost(sent.ref, "delivery_failed")

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.dead.append((reason, detail))

    def records(self) -> list[dict[str, Any]]:
        return [fastavro.schemaless_reader(io.BytesIO(s.value), SCHEMA)  # type: ignore[misc]
                for s in self.log if s.landed]


def connector() -> tuple[Pipeline, ModelSink, list[tuple[str, str, str]]]:
    sink = ModelSink()
    routes = build_routes(CONFIG, lambda kind, _t: PlainAvroSerializer(load_schema(kind)))
    asked: list[tuple[str, str, str]] = []
    pipe = Pipeline(routes, sink, resubscribe=lambda *a: asked.append(a))
    sink.on_lost = pipe.record_lost
    return pipe, sink, asked


def frame_text(kind: str, bids: Levels, asks: Levels, u: int, seq: int,
               symbol: str = SYMBOL) -> str:
    """A Bybit v5 book frame, as Bybit sends it."""
    return json.dumps({"topic": f"{TOPIC_ID}.{symbol}", "ts": 1796391446196 + u, "type": kind,
                       "data": {"s": symbol, "b": [[p, q] for p, q in bids.items()],
                                "a": [[p, q] for p, q in asks.items()], "u": u, "seq": seq},
                       "cts": 1796391446190 + u})


def feed(pipe: Pipeline, text: str) -> None:
    pipe.handle(decode(text, "v5", Stamp(1796391446300, 1)))  # type: ignore[arg-type]


def is_marker(rec: dict[str, Any]) -> bool:
    return not rec["is_snapshot"] and rec["resync_reason"] is not None


def check_rebuilt(recs: list[dict[str, Any]],
                  truth: dict[int, tuple[Levels, Levels]]) -> tuple[Levels, Levels] | None:
    """The README's rebuild recipe, checked at every record; returns the final book.

    A record whose rebuilt book differs from the truth is an error unless a
    later ``delivery_failed`` marker covers it (its ``cross_seq`` at or below
    the record's: the record came after the lost one)."""
    book: tuple[Levels, Levels] | None = None
    wrong: list[tuple[int, dict[str, Any]]] = []
    for i, rec in enumerate(recs):
        if is_marker(rec):
            assert rec["bids"] == [] and rec["asks"] == []
            if rec["resync_reason"] == "delivery_failed":
                wrong = [(j, w) for j, w in wrong if w["cross_seq"] < rec["cross_seq"]]
            book = None
            continue
        levels = ({lv["price"]: lv["quantity"] for lv in rec["bids"]},
                  {lv["price"]: lv["quantity"] for lv in rec["asks"]})
        if rec["is_snapshot"]:
            book = levels
        elif book is None:
            continue  # unknown until the next snapshot
        else:
            for side, changes in zip(book, levels, strict=True):
                for price, qty in changes.items():
                    if qty == "0":
                        side.pop(price, None)
                    else:
                        side[price] = qty
        if book != truth[rec["update_id"]]:
            wrong.append((i, rec))
    assert not wrong, f"book wrong after records {[i for i, _ in wrong]} with no marker"
    return book


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the reproduction in the issue ---------------------------------------------------------

def test_a_delta_without_asks_breaks_the_chain_and_the_next_delta_is_not_applied() -> None:
    pipe, sink, asked = connector()
    resyncs = metric("bybit_connector_book_resyncs_total", stream="v5", topic=TOPIC_ID,
                     reason="dead_letter")
    bids = {"0.5068": "27956.60", "0.5116": "16987.70", "0.5022": "17861.00"}
    asks = {"0.5120": "100.00"}
    truth = {97568089: (dict(bids), dict(asks))}
    feed(pipe, frame_text("snapshot", bids, asks, 97568089, 7961649540))
    # The frame of the issue: no "a" key at all.
    feed(pipe, '{"topic":"orderbook.50.XRPUSDT","type":"delta","ts":1796391446196,'
               '"data":{"s":"XRPUSDT","b":[["0.5068","0"],["0.5116","2.00"],'
               '["0.5022","17883.10"]],"u":97568090,"seq":7961649545}}')
    feed(pipe, frame_text("delta", {"0.5022": "35744.10"}, {}, 97568091, 7961649550))
    recs = sink.records()
    assert [(r["update_id"], r["is_snapshot"], r["resync_reason"]) for r in recs] == [
        (97568089, True, None), (97568090, False, "dead_letter")]
    assert sink.dead == [("mapping_failed", sink.dead[0][1])]
    assert "'a'" in sink.dead[0][1]
    assert asked == [("v5", TOPIC_ID, SYMBOL)]
    assert metric("bybit_connector_book_resyncs_total", stream="v5", topic=TOPIC_ID,
                  reason="dead_letter") == resyncs + 1
    # The resubscribe's snapshot repairs the book and carries the reason.
    pipe.expect_snapshot("v5", [(TOPIC_ID, SYMBOL)])
    now = ({"0.5116": "2.00", "0.5022": "17883.10"}, dict(asks))
    truth[97568095] = now
    feed(pipe, frame_text("snapshot", *now, 97568095, 7961649580))
    recs = sink.records()
    assert (recs[-1]["is_snapshot"], recs[-1]["resync_reason"]) == (True, "dead_letter")
    assert check_rebuilt(recs, truth) == now


def test_a_dropped_or_refused_book_record_breaks_the_chain() -> None:
    pipe, sink, asked = connector()
    truth = {10: ({"1": "1"}, {"2": "1"}), 11: ({"1": "2"}, {"2": "1"}),
             12: ({"1": "3"}, {"2": "1"}), 13: ({"1": "4"}, {"2": "1"})}
    feed(pipe, frame_text("snapshot", *truth[10], 10, 100))
    sink.refuse_next = True  # the pending-records bound drops u=11
    feed(pipe, frame_text("delta", {"1": "2"}, {}, 11, 101))
    feed(pipe, frame_text("delta", {"1": "3"}, {}, 12, 102))
    assert [(r["update_id"], r["resync_reason"]) for r in sink.records()] == [
        (10, None), (11, "dropped")]
    assert len(asked) == 1
    pipe.expect_snapshot("v5", [(TOPIC_ID, SYMBOL)])
    feed(pipe, frame_text("snapshot", *truth[12], 12, 102))
    sink.fail_next = True  # Kafka refuses u=13 after two more records were sent
    feed(pipe, frame_text("delta", {"1": "4"}, {}, 13, 103))
    for u in (14, 15):
        truth[u] = ({"1": str(u - 9)}, {"2": "1"})
        feed(pipe, frame_text("delta", {"1": str(u - 9)}, {}, u, u + 90))
    assert len(asked) == 1  # the failure is known, not yet answered (another thread knew it)
    truth[16] = ({"1": "7"}, {"2": "1"})
    feed(pipe, frame_text("delta", {"1": "7"}, {}, 16, 106))
    recs = sink.records()
    assert [(r["update_id"], r["resync_reason"]) for r in recs[3:]] == [
        (14, None), (15, None), (13, "delivery_failed")]
    assert recs[-1]["cross_seq"] == 103
    assert len(asked) == 2
    check_rebuilt(recs, truth)


def test_an_undecodable_frame_naming_a_book_resyncs_it() -> None:
    pipe, sink, asked = connector()
    snap = frame_text("snapshot", {"1": "1"}, {"2": "1"}, 10, 100)
    feed(pipe, snap)
    feed(pipe, frame_text("delta", {"1": "5"}, {}, 11, 101)[:60])  # truncated
    assert [(r["update_id"], r["resync_reason"]) for r in sink.records()] == [
        (10, None), (10, "dead_letter")]
    assert asked == [("v5", TOPIC_ID, SYMBOL)]
    # Waiting for the snapshot, a truncated frame may have been that snapshot: resubscribe.
    feed(pipe, snap[:70])
    assert len(sink.records()) == 2 and len(asked) == 2
    # A frame naming no configured book changes nothing.
    feed(pipe, '{"topic":"orderbook.50.ETHUSDT","type":"delta","data":{"s":')
    assert len(asked) == 2


def test_book_frame_helpers() -> None:
    assert missing_side({"b": [], "a": []}) is None
    assert missing_side({"b": []}) == "a" and missing_side({"a": [], "b": None}) == "b"
    assert book_in_raw(b'{"topic":"orderbook.200.BTCUSDT","ts":1') == ("orderbook.200",
                                                                       "BTCUSDT")
    assert book_in_raw(b'{"topic": "orderbook.rpi.BTCUSDT"') == ("orderbook.rpi", "BTCUSDT")
    assert book_in_raw(b'{"topic":"publicTrade.BTCUSDT"') is None
    assert set(LOST_REASONS) < set(metrics.BOOK_RESYNC_REASONS)


# -- the property: any frame corrupted, dropped, duplicated or reordered ----------------------

FRAME_FAULTS = ("drop", "duplicate", "swap")
CORRUPTIONS = ("missing_asks", "missing_bids", "bad_level", "truncated", "wrong_symbol",
               "no_u")
SINK_FAULTS = ("sink_drop", "sink_fail")
SNAPSHOT_FAULTS = ("none", *CORRUPTIONS, *SINK_FAULTS)
DELTA_FAULTS = ("none", *FRAME_FAULTS, *CORRUPTIONS, *SINK_FAULTS)

changes = st.lists(st.tuples(st.booleans(), st.integers(1, 12), st.integers(0, 3)),
                   min_size=1, max_size=4)
steps = st.lists(st.tuples(changes, st.sampled_from(DELTA_FAULTS), st.integers(1, 3)),
                 min_size=1, max_size=40)


def corrupt(text: str, how: str) -> str:
    frame = json.loads(text)
    data = frame["data"]
    if how == "truncated":
        return text[:len(text) // 2]
    if how == "missing_asks":
        del data["a"]
    elif how == "missing_bids":
        del data["b"]
    elif how == "bad_level":
        data["b"].append(["0.1"])
    elif how == "wrong_symbol":
        data["s"] = "ETHUSDT"
    elif how == "no_u":
        del data["u"]
    return json.dumps(frame)


class Exchange:
    """A Bybit book and what it sends, faults included (independent of the connector)."""

    def __init__(self, pipe: Pipeline, sink: ModelSink) -> None:
        self.pipe, self.sink = pipe, sink
        self.bids: Levels = {"5": "1"}
        self.asks: Levels = {"20": "1"}
        self.u, self.seq = 1000, 50_000
        self.truth = {self.u: (dict(self.bids), dict(self.asks))}
        self.held: str | None = None

    def send(self, text: str, fault: str) -> None:
        if fault == "sink_drop":
            self.sink.refuse_next = True
        elif fault == "sink_fail":
            self.sink.fail_next = True
        elif fault in CORRUPTIONS:
            text = corrupt(text, fault)
        if fault == "drop":
            return
        if fault == "swap":
            self.held = text
            return
        feed(self.pipe, text)
        if fault == "duplicate":
            feed(self.pipe, text)
        if self.held is not None and fault != "swap":
            held, self.held = self.held, None
            feed(self.pipe, held)

    def snapshot(self, fault: str = "none") -> None:
        self.pipe.expect_snapshot("v5", [(TOPIC_ID, SYMBOL)])  # the connection's on_subscribe
        self.send(frame_text("snapshot", self.bids, self.asks, self.u, self.seq), fault)

    def update(self, levels: list[tuple[bool, int, int]], seq_step: int, fault: str) -> None:
        bids: Levels = {}
        asks: Levels = {}
        for bid, tick, size in levels:
            price = str(tick if bid else tick + 12)  # bids 1-12, asks 13-24: never crossed
            (bids if bid else asks)[price] = str(size)
            book = self.bids if bid else self.asks
            if size:
                book[price] = str(size)
            else:
                book.pop(price, None)
        self.u += 1
        self.seq += seq_step
        self.truth[self.u] = (dict(self.bids), dict(self.asks))
        self.send(frame_text("delta", bids, asks, self.u, self.seq), fault)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, snapshot_faults=st.lists(st.sampled_from(SNAPSHOT_FAULTS), max_size=8))
def test_the_rebuilt_book_is_right_at_every_record_or_marked_unknown(
        steps: list[tuple[list[tuple[bool, int, int]], str, int]],
        snapshot_faults: list[str]) -> None:
    pipe, sink, asked = connector()
    exchange = Exchange(pipe, sink)
    faults = iter(snapshot_faults)
    exchange.snapshot(next(faults, "none"))
    for levels, fault, seq_step in steps:
        exchange.update(levels, seq_step, fault)
        if asked:  # the connection resubscribes: Bybit answers with a snapshot
            asked.clear()
            exchange.snapshot(next(faults, "none"))
    if exchange.held is not None:
        feed(pipe, exchange.held)
    sink.report()  # every delivery failure is known by now
    for _ in range(3):  # the resyncs the last faults asked for; no more faults
        exchange.snapshot()
        asked.clear()
    book = check_rebuilt(sink.records(), exchange.truth)
    assert book == (exchange.bids, exchange.asks)  # the connector recovered


def test_a_lost_delivery_failed_marker_is_written_again() -> None:
    """Only that marker tells of the records already sent on a broken chain."""
    pipe, sink, asked = connector()
    truth = {10: ({"1": "1"}, {"2": "1"})}
    feed(pipe, frame_text("snapshot", *truth[10], 10, 100))
    sink.fail_next, sink.fail_after = True, 1  # u=11 is refused, known after u=12 was sent
    for u in (11, 12):
        truth[u] = ({"1": str(u)}, {"2": "1"})
        feed(pipe, frame_text("delta", {"1": str(u)}, {}, u, u + 90))
    sink.fail_next = True  # ... and so is the marker that says so
    feed(pipe, frame_text("delta", {"1": "13"}, {}, 13, 103))  # answers u=11: marker, resync
    sink.report()
    pipe.expect_snapshot("v5", [(TOPIC_ID, SYMBOL)])
    truth[14] = ({"1": "14"}, {"2": "1"})
    feed(pipe, frame_text("snapshot", *truth[14], 14, 104))
    recs = sink.records()
    assert [(r["update_id"], r["is_snapshot"], r["resync_reason"]) for r in recs] == [
        (10, True, None), (12, False, None), (11, False, "delivery_failed"),
        (14, True, "delivery_failed")]
    assert len(asked) == 1  # the repeated marker needs no second resubscribe
    check_rebuilt(recs, truth)
