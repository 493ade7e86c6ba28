"""What a typed topic already holds, and the sink that writes only the rest.

``replay`` puts ``PresenceFilter`` in front of the real sink. What "already
there" means, per record kind (``identity``): trades by trade id, executions
by exec id, orders by (order id, updated time), books by (symbol, update id,
snapshot?, resync reason); any other kind by its value's bytes (replay
reproduces the receive time, so an unchanged mapping gives the same bytes).

Books are decided per segment (a snapshot and its deltas up to the next
snapshot): a segment the topic holds entirely is skipped; one with any
record missing is written whole, from its snapshot, so a consumer can
rebuild the book from it. Written into a topic that already holds records of
that book, it is framed by resync markers (``resync_reason`` ``replay``
before it, ``replay_end`` after it): a consumer discards its book at the
first, rebuilds from the segment's snapshot, and at the second discards again
and waits for the next snapshot. A book rebuilt into an empty topic gets no
markers, so it equals the original record for record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import fastavro

from connector import records
from connector.pipeline.core import Route, Sink
from connector.pipeline.tail import decode_value

log = logging.getLogger(__name__)

BOOK_KINDS = frozenset({"v5_orderbook", "v5_orderbook_rpi"})


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


# -- identities ---------------------------------------------------------------------------


def identity(kind: str, rec: dict[str, Any], value: bytes) -> Any:
    """What makes a typed record "the same" for replay (see the module doc)."""
    if "trade" in kind and rec.get("trade_id") is not None and "execution" not in kind:
        return ("trade", rec.get("symbol"), rec["trade_id"])
    if rec.get("exec_id") is not None:
        return ("exec", rec["exec_id"])
    if kind == "v5_order":
        return ("order", rec.get("order_id"), millis(rec.get("updated_time")))
    if kind in BOOK_KINDS:
        return ("book", rec.get("symbol"), rec.get("update_id"), rec.get("is_snapshot"),
                rec.get("resync_reason"))
    return value


def millis(value: Any) -> Any:
    """A decoded timestamp-millis (a datetime) as epoch ms; anything else as is."""
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
        marker = {**{k: millis(v) for k, v in rec.items()},
                  "is_snapshot": False, "bids": [], "asks": [], "resync_reason": reason}
        self._summary.markers += 1
        self._target.send(route.kafka_topic, key, route.serializer(marker), headers, 0)
