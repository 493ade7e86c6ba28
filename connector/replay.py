"""``replay``: re-derive the typed topics from the raw frame archive or the
dead-letter topic.

Each selected source record becomes the frame it was (stream, bytes, receive
time) and goes through today's decoders and a ``Pipeline`` built from the
config, exactly as a live frame would: same mappers, keys, headers, schemas,
book continuity checks and sink. Only the sink differs: ``PresenceFilter``
sits in front of it and writes nothing the typed topic already holds.

What "already there" means, per record kind (``identity``): trades by trade
id, executions by exec id, orders by (order id, updated time), books by
(symbol, update id, snapshot?, resync reason); any other kind by its value's
bytes (replay reproduces the receive time, so an unchanged mapping gives the
same bytes). What is present is read from the tail of each typed topic with
``seed.read_tail`` (``tail`` records per partition) before anything is
written, and grows as replay writes, so replaying twice writes nothing the
second time.

Books are decided per segment (a snapshot and its deltas up to the next
snapshot): a segment the topic holds entirely is skipped; one with any
record missing is written whole, from its snapshot, so a consumer can
rebuild the book from it. Written into a topic that already holds records of
that book, it is framed by resync markers (``resync_reason`` ``replay``
before it, ``replay_end`` after it): a consumer discards its book at the
first, rebuilds from the segment's snapshot, and at the second discards again
and waits for the next snapshot. A book rebuilt into an empty topic gets no
markers, so it equals the original record for record.

Frames that still fail are counted (``still_failing``), never written to the
dead-letter topic a second time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import fastavro
from kafka import KafkaConsumer, TopicPartition

from connector import archive, records
from connector.bybit import frames
from connector.bybit.events import Event, Stamp
from connector.bybit.v5 import frames as v5_frames
from connector.config import Config
from connector.errors import ConnectorError
from connector.pipeline import Pipeline, Route, Sink, build_routes
from connector.seed import decode_value, read_tail
from connector.sink import producer_settings

log = logging.getLogger(__name__)

TAIL = 500_000  # typed records per partition read to know what is present
PROGRESS_EVERY = 10_000  # source records between two progress lines
REPLAY_REASONS = ("mapping_failed", "serialization_failed", "undecodable_frame")
BOOK_KINDS = frozenset({"v5_orderbook", "v5_orderbook_rpi"})


@dataclass(frozen=True, slots=True)
class Selection:
    """What to replay: a source topic, an offset or time range (per partition,
    end exclusive), symbols and Bybit topic ids (empty: all)."""

    source: str
    start_offset: int | None = None
    end_offset: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    symbols: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()


@dataclass(slots=True)
class Summary:
    """Counts of one replay (printed at the end)."""

    read: int = 0  # source records read in the range
    selected: int = 0  # ... of them matching symbols/topics, replayed
    written: int = 0  # typed records written (or, dry run, that would be)
    present: int = 0  # typed records already in their topic, not written
    rewritten: int = 0  # book records already present, written again inside a segment
    markers: int = 0  # book segment markers written
    still_failing: int = 0  # frames that still do not decode, map or serialize
    failing: dict[str, int] = field(default_factory=dict)  # by reason

    def line(self) -> str:
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.failing.items()))
        return (f"read {self.read}, selected {self.selected}, written {self.written}, "
                f"already present {self.present}, book records rewritten {self.rewritten}, "
                f"book markers {self.markers}, "
                f"still failing {self.still_failing}" + (f" ({why})" if why else ""))


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One frame to replay, from an archive record or a dead letter."""

    stream: str
    topic_id: str
    symbol: str
    received_ms: int
    frame: bytes


# -- identities ---------------------------------------------------------------------------


def identity(kind: str, rec: dict[str, Any], value: bytes) -> Any:
    """What makes a typed record "the same" for replay (see the module doc)."""
    if "trade" in kind and rec.get("trade_id") is not None and "execution" not in kind:
        return ("trade", rec.get("symbol"), rec["trade_id"])
    if rec.get("exec_id") is not None:
        return ("exec", rec["exec_id"])
    if kind == "v5_order":
        return ("order", rec.get("order_id"), _millis(rec.get("updated_time")))
    if kind in BOOK_KINDS:
        return ("book", rec.get("symbol"), rec.get("update_id"), rec.get("is_snapshot"),
                rec.get("resync_reason"))
    return value


def _millis(value: Any) -> Any:
    return int(value.timestamp() * 1000 + 0.5) if isinstance(value, datetime) else value


# -- the sink in front of the real one ---------------------------------------------------


@dataclass(slots=True)
class _Segment:
    """The replayed records of one book from one snapshot to the next."""

    held_before: bool  # the topic held records of this book before the replay
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]], int, Any, bool]] = field(
        default_factory=list)  # (key, value, headers, mono_ns, identity, present)
    missing: bool = False  # a record the topic lacks: the segment is written
    streaming: bool = False  # too long to hold: written as it comes
    first: dict[str, Any] | None = None
    last: dict[str, Any] | None = None


SEGMENT_MAX = 200_000  # book records held before a segment is written as it comes


class PresenceFilter:
    """A ``pipeline.Sink`` that passes on only what the typed topic lacks.

    Book records are held per segment (one snapshot to the next): a segment
    the topic holds entirely is skipped; one with any record missing is
    written whole, framed by markers when the topic held that book before."""

    def __init__(self, routes: dict[tuple[str, str], Route], target: Sink, confluent: bool,
                 summary: Summary, segment_max: int = SEGMENT_MAX) -> None:
        self._by_topic = {r.kafka_topic: r for r in routes.values()}
        self._parsed = {t: fastavro.parse_schema(records.load_schema(r.kind))
                        for t, r in self._by_topic.items()}
        self._confluent = confluent
        self._target = target
        self._summary = summary
        self._segment_max = segment_max
        self.present: dict[str, set[Any]] = {t: set() for t in self._by_topic}
        self.books_present: set[tuple[str, str]] = set()  # (topic, symbol) held before
        self._segments: dict[tuple[str, str], _Segment] = {}

    def decode(self, topic: str, value: bytes) -> dict[str, Any] | None:
        parsed = self._parsed.get(topic)
        return None if parsed is None else decode_value(value, parsed, self._confluent)

    def learn(self, topic: str, value: bytes) -> None:
        """A record the topic already holds."""
        rec = self.decode(topic, value)
        if rec is None:
            return
        kind = self._by_topic[topic].kind
        self.present[topic].add(identity(kind, rec, value))
        if kind in BOOK_KINDS:
            self.books_present.add((topic, str(rec.get("symbol"))))

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        route = self._by_topic.get(topic)
        rec = self.decode(topic, value)
        if route is None or rec is None:
            return self._target.send(topic, key, value, headers, received_mono_ns)
        ident = identity(route.kind, rec, value)
        present = ident in self.present[topic]
        if route.kind in BOOK_KINDS:
            self._book(route, rec, (key, value, headers, received_mono_ns, ident, present))
            return True
        if present:
            self._summary.present += 1
            return True
        self.present[topic].add(ident)
        self._summary.written += 1
        return self._target.send(topic, key, value, headers, received_mono_ns)

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self._summary.still_failing += 1
        self._summary.failing[reason] = self._summary.failing.get(reason, 0) + 1
        log.warning("still failing (%s, for %s): %s", reason, source, detail)

    def _book(self, route: Route, rec: dict[str, Any],
              entry: tuple[bytes | None, bytes, list[tuple[str, bytes]], int, Any, bool]) -> None:
        book = (route.kafka_topic, str(rec.get("symbol")))
        seg = self._segments.get(book)
        if seg is not None and rec.get("is_snapshot"):
            self._finish(route, seg)
            seg = None
        if seg is None:
            seg = self._segments[book] = _Segment(book in self.books_present, first=rec)
        seg.last = rec
        seg.missing = seg.missing or not entry[5]
        if seg.streaming:
            self._write(route, entry)
            return
        seg.records.append(entry)
        if len(seg.records) >= self._segment_max:
            if seg.missing:  # written from here on as it comes
                self._open(route, seg)
                seg.streaming = True
            else:  # held entirely so far: forget it (a later gap is written unframed)
                self._summary.present += len(seg.records)
                seg.first = None
            seg.records.clear()

    def _open(self, route: Route, seg: _Segment) -> None:
        if seg.held_before and seg.first is not None:
            self._marker(route, seg.records[0][0], seg.first, "replay", seg.records[0][2])
        for entry in seg.records:
            self._write(route, entry)

    def _write(self, route: Route,
               entry: tuple[bytes | None, bytes, list[tuple[str, bytes]], int, Any, bool]) -> None:
        key, value, headers, mono_ns, ident, present = entry
        if present:
            self._summary.rewritten += 1
        else:
            self._summary.written += 1
            self.present[route.kafka_topic].add(ident)
        self._target.send(route.kafka_topic, key, value, headers, mono_ns)

    def _finish(self, route: Route, seg: _Segment) -> None:
        if not seg.missing:
            self._summary.present += len(seg.records)
            return
        key = seg.records[0][0] if seg.records else None
        if not seg.streaming:
            self._open(route, seg)
        if seg.held_before and seg.last is not None:
            self._marker(route, key, seg.last, "replay_end", route.headers)

    def close_segments(self) -> None:
        """After the replay: decide (and frame) every book segment still open."""
        for (topic, _symbol), seg in self._segments.items():
            self._finish(self._by_topic[topic], seg)
        self._segments.clear()

    def _marker(self, route: Route, key: bytes | None, rec: dict[str, Any], reason: str,
                headers: list[tuple[str, bytes]]) -> None:
        # The decoded record's times are datetimes; the serializer takes epoch ms.
        marker = {**{k: _millis(v) for k, v in rec.items()},
                  "is_snapshot": False, "bids": [], "asks": [], "resync_reason": reason}
        self._summary.markers += 1
        self._target.send(route.kafka_topic, key, route.serializer(marker), headers, 0)


# -- reading the source ------------------------------------------------------------------


def _int_header(headers: dict[str, bytes], name: str, default: int) -> int:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return default


def source_frame(message: Any, from_archive: bool, parsed: Any,
                 confluent: bool) -> SourceFrame | None:
    """The frame a source record holds, None if it holds none to replay."""
    headers = {k: v for k, v in (message.headers or [])}
    if from_archive:
        rec = decode_value(message.value, parsed, confluent)
        if rec is None:
            return None
        return SourceFrame(rec["stream"], rec["bybit_topic"], rec["symbol"],
                           int(_millis(rec["received_time"])), rec["frame"])
    reason = headers.get("dlq.reason", b"").decode()
    stream = headers.get("bybit.stream", b"").decode()
    if reason not in REPLAY_REASONS or not stream or not message.value:
        return None
    return SourceFrame(stream, headers.get("bybit.topic", b"").decode(),
                       headers.get("bybit.symbol", b"").decode(),
                       _int_header(headers, "bybit.received_ms", message.timestamp),
                       message.value)


def decode_frame(frame: SourceFrame) -> Event:
    """Today's decoder of the frame's stream (archived frames are text; a
    dead-lettered legacy binary frame is still compressed)."""
    stamp = Stamp(frame.received_ms, time.monotonic_ns())
    if frame.stream in ("v5", "v5-private"):
        event: Event = v5_frames.decode(frame.frame, frame.stream, stamp)  # type: ignore[arg-type,assignment]
        return event
    # A dead-lettered legacy binary frame is kept as received: compressed.
    binary = frame.frame.lstrip()[:1] not in (b"{", b"[")
    return frames.decode(frame.frame, frame.stream, stamp, binary=binary)  # type: ignore[arg-type]


def read_range(consumer: KafkaConsumer, selection: Selection,
               idle_timeout: float = 30.0) -> Iterator[Any]:
    """The source records in the selected range, partition by partition.
    ``ConnectorError`` when a partition yields nothing for ``idle_timeout`` s."""
    partitions = sorted(consumer.partitions_for_topic(selection.source) or set())
    tps = [TopicPartition(selection.source, p) for p in partitions]
    if not tps:
        raise ConnectorError(f"topic {selection.source!r} does not exist or has no partitions")
    begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    starts = dict(begin)
    if selection.start_offset is not None:
        starts = {tp: max(begin[tp], selection.start_offset) for tp in tps}
    if selection.start_ms is not None:
        found = consumer.offsets_for_times({tp: selection.start_ms for tp in tps})
        starts = {tp: max(starts[tp], found[tp].offset if found[tp] else end[tp])
                  for tp in tps}
    stops = dict(end)
    if selection.end_offset is not None:
        stops = {tp: min(end[tp], selection.end_offset) for tp in tps}
    for tp in tps:
        if starts[tp] >= stops[tp]:
            continue
        consumer.assign([tp])
        consumer.seek(tp, starts[tp])
        quiet_since = time.monotonic()
        while consumer.position(tp) < stops[tp]:
            batch = consumer.poll(timeout_ms=1000, max_records=5000)
            if batch:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > idle_timeout:
                raise ConnectorError(f"{selection.source} partition {tp.partition}: nothing "
                                     f"read for {idle_timeout:.0f} s at offset "
                                     f"{consumer.position(tp)} (of {stops[tp]})")
            for m in batch.get(tp, []):
                if m.offset >= stops[tp]:
                    break
                if selection.end_ms is not None and m.timestamp >= selection.end_ms:
                    stops[tp] = m.offset
                    break
                yield m


def _selected(frame: SourceFrame, selection: Selection) -> bool:
    if selection.symbols and frame.symbol not in selection.symbols:
        return False
    if selection.topics and frame.topic_id not in selection.topics:
        return False
    return not (selection.end_ms is not None and frame.received_ms >= selection.end_ms)


# -- the command -------------------------------------------------------------------------


def replay(config: Config, selection: Selection, target: Sink,
           serializer_for: Callable[[str, str], Any], out: TextIO,
           tail: int = TAIL, printer: PrintingSink | None = None, timeout: float = 60.0,
           progress_every: int = PROGRESS_EVERY) -> Summary:
    """Replay ``selection`` into ``target`` (the real sink, or a printing one
    for a dry run). Blocks until the range is read; the caller flushes ``target``."""
    summary = Summary()
    routes = build_routes(config, serializer_for)
    confluent = config.serialization.format == "confluent"
    gate = PresenceFilter(routes, target, confluent, summary)
    if printer is not None:
        printer.decode = gate.decode
    settings = {k: v for k, v in producer_settings(config.kafka).items()
                if k in KafkaConsumer.DEFAULT_CONFIG}
    settings.update(group_id=None, enable_auto_commit=False,
                    client_id="bybit-kafka-connector-replay")
    consumer = KafkaConsumer(**settings)
    try:
        deadline = time.monotonic() + timeout
        for topic in gate.present:
            for m in read_tail(consumer, topic, tail, deadline):
                gate.learn(topic, m.value)
        pipeline = Pipeline(routes, gate)
        from_archive = selection.source != config.kafka.dead_letter_topic
        parsed = fastavro.parse_schema(records.load_schema(archive.KIND))
        for m in read_range(consumer, selection):
            summary.read += 1
            frame = source_frame(m, from_archive, parsed, confluent)
            if frame is not None and _selected(frame, selection):
                summary.selected += 1
                pipeline.handle(decode_frame(frame))
            if progress_every and summary.read % progress_every == 0:
                print(f"progress: partition {m.partition} offset {m.offset}: "
                      f"{summary.line()}", file=out, flush=True)
        gate.close_segments()
    finally:
        consumer.close()
    return summary


class PrintingSink:
    """The dry run's sink: one line per record that would be written."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.decode: Callable[[str, bytes], dict[str, Any] | None] = lambda _t, _v: None

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        rec = self.decode(topic, value)
        shown = json.dumps(rec, default=str) if rec is not None else f"{len(value)} bytes"
        print(f"would write {topic} key={(key or b'').decode(errors='replace')}: {shown}",
              file=self._out)
        return True

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Not called: the presence filter counts what still fails."""


def run_replay(config: Config, selection: Selection, dry_run: bool, out: TextIO,
               tail: int = TAIL) -> Summary:
    """The ``replay`` command: the real sink (flushed and closed at the end),
    or with ``dry_run`` a printing one; prints progress and the summary."""
    from connector.service import serializer_factory
    from connector.sink import KafkaSink, ensure_topics

    serializer_for = serializer_factory(config)
    sink: Any
    if dry_run:
        sink = PrintingSink(out)
    else:
        topics = sorted({config.kafka_topic(s) for s in config.subscriptions})
        ensure_topics(config.kafka, topics, create=config.kafka.create_topics)
        sink = KafkaSink(config.kafka, warm_topics=topics)
    try:
        summary = replay(config, selection, sink, serializer_for, out, tail,
                         printer=sink if dry_run else None)
    finally:
        lost = 0 if dry_run else sink.close()
    if lost:
        raise ConnectorError(f"{lost} replayed records were not acknowledged by Kafka "
                             "(counted as dropped); run replay again")
    print(("dry run: " if dry_run else "") + summary.line(), file=out, flush=True)
    return summary
