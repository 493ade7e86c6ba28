"""Connects the stages: exchange event → map to records → serialize → produce.

``Pipeline.handle`` is the ``on_event`` callback of every connection; it runs
on the connection's thread (no extra queue hop, so no extra copy or latency)
and returns quickly unless Kafka's buffer is full, where the sink's
backpressure policy bounds the wait. It owns replay de-duplication and the
dead-letter routing of anything that cannot be mapped or serialized.

v5 books (``orderbook.N``, ``orderbook.rpi``) pass ``books.BookTracker``
first: stale deltas and deltas before the first snapshot are dropped and
counted; a gap or an out-of-order delta is not written, a resync marker
record is (same Kafka topic, empty book, ``resync_reason`` set: "discard your
book until the next snapshot"), and the owning connection resubscribes the
topic; the snapshot that follows carries the same ``resync_reason``.

The same happens whenever a book frame that passed the continuity check is
not written (the chain is broken, whatever happened to the frame): it did
not map, lacked a side or did not serialize (``dead_letter``), could not even
be decoded but names its book (``dead_letter``), was refused by the
pending-records bound (``dropped``), or was refused by Kafka
(``delivery_failed``). A delivery failure is known only later, on the sink's
watchdog thread: it is queued and answered on the book's own connection
thread before that book's next frame, so its marker follows the records sent
meanwhile (see the README's rebuild recipe for what a consumer does).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector import records
from connector.bybit.books import (
    RESYNC,
    BookRef,
    BookTracker,
    book_in_raw,
    marker_frame,
    missing_side,
)
from connector.bybit.events import Event, MarketData, PrivateData, Stamp, Undecodable, V5Data
from connector.bybit.legacy.frames import market_topic_id
from connector.config.model import Config, SubscriptionConfig
from connector.errors import ConnectorError, SerializationError
from connector.ops import metrics
from connector.ops.fastmetrics import HistogramChild
from connector.pipeline.dedup import RecentIds
from connector.pipeline.hold import Holds
from connector.serde.serializers import Serializer

log = logging.getLogger(__name__)

DEDUP_CAPACITY = 1000  # ids remembered per (stream, symbol); Bybit replays 60
# v5 record field(s) that identify a record for de-duplication, per topic: what two
# owners of a shard both received during a hand-over is written once. An order
# update is (order id, updated time); its status and reject reason are part of it
# because Bybit documents a second ``Filled`` row when a cancel races the last fill,
# which may carry the same updated time. A wallet row is one push of the account's
# state: its message id (and account type, several rows may share a push).
ORDER_IDENTITY = ("order_id", "updated_time", "order_status", "reject_reason")
WALLET_IDENTITY = ("message_id", "account_type")
V5_DEDUP_FIELDS: dict[str, str | tuple[str, ...]] = {
    "publicTrade": "trade_id", "execution": "exec_id", "execution.spot": "exec_id",
    "execution.fast": "exec_id", "execution.fast.spot": "exec_id",
    "order": ORDER_IDENTITY, "order.spot": ORDER_IDENTITY, "wallet": WALLET_IDENTITY}


class Sink(Protocol):
    """What the pipeline needs of the Kafka side (see ``sink.KafkaSink``)."""

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        """False: dropped (counted). A refused record with a ``ref`` is reported
        later through ``Pipeline.record_lost`` (``sink.KafkaSink.on_lost``)."""
        raise NotImplementedError

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None: ...


class Archiver(Protocol):
    """What the pipeline needs of the raw frame archive (``archive.Archive``)."""

    def write(self, event: Event) -> None: ...

    def topic_for(self, stream: str, topic_id: str) -> str | None:
        """The raw topic holding this subscription's frames, None if not archived."""
        ...


# A dead-lettered frame larger than this is replaced by a reference into the archive
# (Kafka's default max.request.size is 1 MiB; the headers need room too).
DEAD_LETTER_FRAME_MAX = 1_000_000


@dataclass(slots=True)
class Route:
    """Where one configured Bybit topic goes and how it is written."""

    stream: str
    topic_id: str
    kind: str
    kafka_topic: str
    mapper: Callable[..., Any]
    serializer: Serializer
    headers: list[tuple[str, bytes]]  # every record's (``kafka.headers``), but received_ms
    received_header: bool = True  # add bybit.received_ms (``kafka.headers: full``)
    dedup_field: str | tuple[str, ...] | None = None  # what identifies a record
    dedup: dict[str, RecentIds] = field(default_factory=dict)
    held: Holds = field(default_factory=Holds)  # symbols waiting for their seed (hold.py)
    book: bool = False  # a v5 book: continuity-checked
    lags: dict[int, HistogramChild] = field(default_factory=dict)  # thread id -> child

    def headers_for(self, stamp: Stamp) -> list[tuple[str, bytes]]:
        """The headers of one frame's records (one list, shared by its records)."""
        if not self.received_header:
            return self.headers
        return [*self.headers, ("bybit.received_ms", str(stamp.wall_ms).encode())]

    def identity(self, rec: dict[str, Any]) -> str:
        """The record's identity for de-duplication (``dedup_field`` is set)."""
        field = self.dedup_field
        if isinstance(field, str):
            return str(rec[field])
        assert field is not None
        return "|".join(str(rec.get(f)) for f in field)

    def lag(self) -> HistogramChild:
        """The calling thread's ``event_lag_seconds`` child (lock-free children
        have one writer each; a topic can be served by several connections)."""
        ident = threading.get_ident()
        child = self.lags.get(ident)
        if child is None:
            child = self.lags[ident] = metrics.event_lag_seconds.labels(self.stream,
                                                                        self.topic_id)
        return child


def build_routes(config: Config,
                 serializer_for: Callable[[str, str], Serializer]) -> dict[tuple[str, str], Route]:
    """One route per (stream, topic id); ``serializer_for(kind, kafka_topic)``."""
    routes: dict[tuple[str, str], Route] = {}
    for sub in config.subscriptions:
        key = (sub.stream, sub.topic_id)
        if key in routes:
            continue
        routes[key] = _route(config, sub, serializer_for)
    return routes


def _route(config: Config, sub: SubscriptionConfig,
           serializer_for: Callable[[str, str], Serializer]) -> Route:
    kind = sub.spec.kind
    kafka_topic = config.kafka_topic(sub)
    serializer = serializer_for(kind, kafka_topic)
    full = config.kafka.headers == "full"
    headers = [
        *([("bybit.stream", sub.stream.encode()), ("bybit.topic", sub.topic_id.encode())]
          if full else []),
        *serializer.headers,
    ]
    v5 = sub.stream in ("v5", "v5-private")
    return Route(
        stream=sub.stream, topic_id=sub.topic_id, kind=kind, kafka_topic=kafka_topic,
        mapper=records.MAPPERS[kind], serializer=serializer, headers=headers,
        received_header=full,
        dedup_field=(V5_DEDUP_FIELDS.get(sub.topic) if v5
                     else "trade_id" if sub.topic == "trade" else None),
        book=v5 and sub.spec.book,
    )


class Pipeline:
    """Maps, serializes and sends every event a connection hands it."""

    def __init__(self, routes: dict[tuple[str, str], Route], sink: Sink,
                 resubscribe: Callable[[str, str, str], None] | None = None,
                 archive: Archiver | None = None) -> None:
        self._routes = routes
        self._archive = archive  # every frame is archived first, before mapping
        self._sink = sink
        self._books = BookTracker()
        # Book records Kafka refused, per (stream, topic_id, symbol): the first one lost.
        self._lost: dict[tuple[str, str, str], tuple[str, BookRef]] = {}
        self._lost_lock = threading.Lock()
        self.resubscribe = resubscribe  # (stream, topic_id, symbol): set once connections exist
        for route in routes.values():
            metrics.duplicates_suppressed_total.labels(route.stream, route.topic_id)
            metrics.event_lag_seconds.labels(route.stream, route.topic_id)

    def expect_snapshot(self, stream: str, pairs: Sequence[tuple[str, str]]) -> None:
        """A connection is about to (re)subscribe ``pairs``: until each book's
        snapshot, its deltas are dropped (the connections' ``on_subscribe``)."""
        for topic_id, symbol in pairs:
            route = self._routes.get((stream, topic_id))
            if route is not None and route.book:
                self._books.expect_snapshot(topic_id, symbol)

    def route_of(self, event: Event) -> Route | None:
        """The route a data event is written by (None: not routed, or not data)."""
        if isinstance(event, V5Data):
            return self._routes.get((event.stream, event.topic_id))
        if isinstance(event, MarketData):
            return self._routes.get((event.stream, market_topic_id(event)))
        return None

    def continue_book(self, topic_id: str, symbol: str, u: int | None) -> None:
        """A standby takes over a book whose chain in Kafka ends at ``u`` (None: it
        starts at a snapshot). Called before its frames are written again."""
        if u is None:
            self._books.expect_snapshot(topic_id, symbol)
        else:
            self._books.continue_at(topic_id, symbol, u)

    def handle(self, event: Event, archive: bool = True) -> None:
        """The connections' ``on_event``. Never raises for bad data. ``archive``
        False: a frame archived already (a standby writing what it kept)."""
        if archive and self._archive is not None:
            self._archive.write(event)
        if isinstance(event, MarketData):
            route = self._routes.get((event.stream, market_topic_id(event)))
            if route is None:
                metrics.unrouted_events_total.labels(event.stream, metrics.UNKNOWN).inc()
                return
            self._write_market(route, event)
        elif isinstance(event, V5Data):
            route = self._routes.get((event.stream, event.topic_id))
            if route is None:
                metrics.unrouted_events_total.labels(event.stream, event.topic_id[:40]).inc()
                return
            self._write_v5(route, event)
        elif isinstance(event, PrivateData):
            self._write_private(event)
        elif isinstance(event, Undecodable):
            raw = event.raw
            self._sink.dead_letter(
                raw, "undecodable_frame", f"stream:{event.stream}", event.detail,
                [("dlq.undecodable_reason", event.reason.encode()),
                 ("bybit.stream", event.stream.encode()),
                 ("bybit.received_ms", str(event.stamp.wall_ms).encode())])
            if event.stream == "v5":
                self._undecodable_book(event)

    def record_lost(self, ref: object, reason: str) -> None:
        """``sink.KafkaSink.on_lost``: a book record was refused after it was
        sent. Thread-safe; the book's chain is broken on its own thread."""
        if not isinstance(ref, BookRef):
            return
        if ref.marker is not None and ref.marker != "delivery_failed":
            return  # nothing to repeat: no delta is written before the snapshot anyway
        # A lost delivery_failed marker is written again: only it tells of the records
        # already sent on a broken chain.
        with self._lost_lock:
            self._lost.setdefault((ref.stream, ref.topic_id, ref.symbol),
                                  (ref.marker or reason, ref))

    def lost_pending(self) -> int:
        """Books with a refused record not answered yet (each waits for its next frame)."""
        return len(self._lost)

    def _write_market(self, route: Route, data: MarketData) -> None:
        try:
            recs = route.mapper(data)
        except ConnectorError as exc:
            self._dead_letter_frame(data.raw, "mapping_failed", route, str(exc), data.stream,
                                    data.stamp, data.symbol)
            return
        # Key and headers are the same for every record of a frame: built once.
        # (kafka-python encodes headers as it appends, so sharing the list is safe.)
        headers = route.headers_for(data.stamp)
        self._send(route, recs, data.symbol.encode(), headers, data.stamp.mono_ns,
                   data.stamp.wall_ms, data.raw)

    def _write_v5(self, route: Route, data: V5Data) -> None:
        if not route.book:
            try:
                recs = route.mapper(data)
            except ConnectorError as exc:
                self._dead_letter_frame(data.raw, "mapping_failed", route, str(exc),
                                        data.stream, data.stamp, data.symbol)
                return
            self._send(route, recs, None, route.headers_for(data.stamp), data.stamp.mono_ns,
                       data.stamp.wall_ms, data.raw,
                       data.ts if data.ts is not None else data.creation_time)
            return
        if self._lost:
            self._answer_lost(route, data)
        item = data.items[0] if data.items else {}
        u, seq = item.get("u"), item.get("seq")
        if not isinstance(seq, int):
            seq = None
        reason = self._check_book(route, data, u, seq)
        if reason is None:
            return
        # From here on the frame is part of the chain: not writing it breaks the chain.
        side = missing_side(item)
        try:
            if side is not None:
                raise records.MappingError(route.kind, "bids" if side == "b" else "asks",
                                           f"Bybit field {side!r} is missing or not a list "
                                           "(a book frame carries both sides)")
            recs = route.mapper(data)
        except ConnectorError as exc:
            self._dead_letter_frame(data.raw, "mapping_failed", route, str(exc), data.stream,
                                    data.stamp, data.symbol)
            self._chain_broken(route, data, "dead_letter")
            return
        if reason:
            for rec in recs:
                rec["resync_reason"] = reason
        ref = BookRef(data.stream, data.topic_id, data.symbol, u if isinstance(u, int) else 0,
                      seq)
        lost = self._send(route, recs, None, route.headers_for(data.stamp), data.stamp.mono_ns,
                          data.stamp.wall_ms, data.raw, data.ts, ref)
        if lost:
            self._chain_broken(route, data, lost)

    def _check_book(self, route: Route, data: V5Data, u: Any, seq: int | None) -> str | None:
        """Continuity of a v5 book frame (``u``, ``seq``: its ids as sent).
        Returns None when the frame is not to be written (dropped, or replaced
        by a marker), else the resync reason its snapshot carries ("" for none)."""
        if not isinstance(u, int):
            return ""  # the mapper dead-letters a book frame without an update id
        verdict = self._books.check(data.topic_id, data.symbol, data.type == "snapshot", u, seq)
        if verdict == "ok":
            return self._books.take_reason(data.topic_id, data.symbol) or ""
        if verdict in RESYNC:
            self._resync(route, data.stream, data.topic_id, data.symbol, verdict, u, seq,
                         data.ts, data.stamp)
        else:
            metrics.book_deltas_dropped_total.labels(data.stream, data.topic_id, verdict).inc()
        return None

    def _chain_broken(self, route: Route, data: V5Data, reason: str) -> None:
        """A frame that passed the continuity check was not written: resync."""
        item = data.items[0] if data.items else {}
        u, seq = item.get("u"), item.get("seq")
        last_u, last_seq = self._books.position(data.topic_id, data.symbol)
        if not self._books.break_chain(data.topic_id, data.symbol, reason):
            return
        self._resync(route, data.stream, data.topic_id, data.symbol, reason,
                     u if isinstance(u, int) else last_u,
                     seq if isinstance(seq, int) else last_seq, data.ts, data.stamp)

    def _undecodable_book(self, event: Undecodable) -> None:
        """An undecodable frame that names a configured book may have been a
        delta or the awaited snapshot: resync (marker only if the chain was live)."""
        named = book_in_raw(event.raw)
        route = None if named is None else self._routes.get((event.stream, named[0]))
        if named is None or route is None or not route.book or not self._books.knows(*named):
            return
        topic_id, symbol = named
        last_u, last_seq = self._books.position(topic_id, symbol)
        if self._books.break_chain(topic_id, symbol, "dead_letter"):
            self._resync(route, event.stream, topic_id, symbol, "dead_letter", last_u, last_seq,
                         None, event.stamp)
        elif self.resubscribe is not None:
            metrics.book_resyncs_total.labels(event.stream, topic_id, "dead_letter").inc()
            self.resubscribe(event.stream, topic_id, symbol)

    def _answer_lost(self, route: Route, data: V5Data) -> None:
        """Before a book's next frame: its records Kafka refused meanwhile."""
        with self._lost_lock:
            lost = self._lost.pop((data.stream, data.topic_id, data.symbol), None)
        if lost is None:
            return
        reason, ref = lost
        live = self._books.break_chain(data.topic_id, data.symbol, reason)
        # The marker follows the records sent after the lost one: always written, even
        # when a snapshot is already awaited; resubscribe only if none is.
        self._resync(route, data.stream, data.topic_id, data.symbol, reason, ref.update_id,
                     ref.cross_seq, None, data.stamp, resubscribe=live)

    def _resync(self, route: Route, stream: str, topic_id: str, symbol: str, reason: str,
                u: int | None, seq: int | None, ts: int | None, stamp: Stamp,
                resubscribe: bool = True) -> None:
        """Count, write the marker (``update_id``/``cross_seq``: the frame that
        revealed or was the problem, else the last written), resubscribe."""
        log.warning("%s %s: %s at u=%s; writing a resync marker%s", topic_id, symbol, reason, u,
                    " and resubscribing" if resubscribe else "")
        metrics.book_resyncs_total.labels(stream, topic_id, reason).inc()
        frame = marker_frame(stream, topic_id, symbol, u, seq, ts, stamp)
        try:
            marker = _resync_marker(route.kind, frame, reason)
        except (ConnectorError, ValueError) as exc:  # a schema that cannot hold a marker
            log.error("%s %s: cannot write a resync marker: %s", topic_id, symbol, exc)
        else:
            ref = BookRef(stream, topic_id, symbol, u or 0, seq, marker=reason)
            if self._send(route, [marker], None, route.headers_for(stamp), stamp.mono_ns,
                          stamp.wall_ms, frame.raw, frame.ts, ref):
                self.record_lost(ref, "dropped")
        if resubscribe and self.resubscribe is not None:
            self.resubscribe(stream, topic_id, symbol)

    def _first_time(self, route: Route, rec: dict[str, Any]) -> bool:
        symbol = rec.get("symbol") or ""
        seen = route.dedup.get(symbol)
        if seen is None:
            seen = route.dedup.setdefault(symbol, RecentIds(DEDUP_CAPACITY))
        if seen.add(route.identity(rec)):
            return True
        metrics.duplicates_suppressed_total.labels(route.stream, route.topic_id).inc()
        return False

    def _write_private(self, data: PrivateData) -> None:
        for event in data.events:
            name = event.get("e")
            route = self._routes.get(("private", name)) if isinstance(name, str) else None
            if route is None:
                known = name if name in records.PRIVATE_KINDS else metrics.UNKNOWN  # bounded
                metrics.unrouted_events_total.labels("private", known).inc()
                continue
            try:
                rec = route.mapper(event, data)
            except ConnectorError as exc:
                self._dead_letter_frame(data.raw, "mapping_failed", route, str(exc), "private",
                                        data.stamp)
                continue
            headers = route.headers_for(data.stamp)
            self._send(route, [rec], None, headers, data.stamp.mono_ns, data.stamp.wall_ms,
                       data.raw)

    def _send(self, route: Route, recs: list[dict[str, Any]], key: bytes | None,
              headers: list[tuple[str, bytes]], mono_ns: int, wall_ms: int,
              raw: str | bytes, event_ms: int | None = None,
              ref: BookRef | None = None) -> str | None:
        """De-duplicate, serialize and send the records of one frame.

        One loop per frame with what every record shares looked up once: this
        is the per-record path. ``key`` None: each record's own
        (``records.record_key``); ``event_ms`` None: each record's
        ``event_time`` is its event time for the lag histogram; ``ref``: a
        book record's identity, for a later delivery failure. Returns None
        when every record was handed to Kafka, else why one was not
        (``dead_letter``, ``dropped``).
        """
        if route.held and recs and route.held.defer(
                str(recs[0].get("symbol", "")),
                lambda: self._send_now(route, recs, key, headers, mono_ns, wall_ms, raw,
                                       event_ms, ref)):
            return None  # written on release, once the seed knows the overlap
        return self._send_now(route, recs, key, headers, mono_ns, wall_ms, raw, event_ms, ref)

    def _send_now(self, route: Route, recs: list[dict[str, Any]], key: bytes | None,
                  headers: list[tuple[str, bytes]], mono_ns: int, wall_ms: int,
                  raw: str | bytes, event_ms: int | None = None,
                  ref: BookRef | None = None) -> str | None:
        lag = route.lag().observe
        serialize, send, topic = route.serializer, self._sink.send, route.kafka_topic
        dedup = route.dedup_field is not None
        lost: str | None = None
        for rec in recs:
            if dedup and not self._first_time(route, rec):
                continue
            try:
                value = serialize(rec)
            except SerializationError as exc:
                self._dead_letter_frame(raw, "serialization_failed", route, str(exc),
                                        route.stream, Stamp(wall_ms, mono_ns),
                                        str(rec.get("symbol") or ""))
                lost = lost or "dead_letter"
                continue
            event_time = event_ms if event_ms is not None else rec.get("event_time")
            if isinstance(event_time, int):
                lag(max(0.0, (wall_ms - event_time) / 1000.0))
            rec_key = key if key is not None else records.record_key(route.kind, rec)
            if ref is None:
                sent = send(topic, rec_key, value, headers, mono_ns)
            else:
                sent = send(topic, rec_key, value, headers, mono_ns, ref)
            if not sent:
                lost = lost or "dropped"
        return lost

    def _dead_letter_frame(self, raw: str | bytes, reason: str, route: Route, detail: str,
                           stream: str, stamp: Stamp, symbol: str = "") -> None:
        """The whole frame, with what ``replay`` needs to map it again: stream,
        Bybit topic, symbol, receive time. A frame too large for a Kafka record
        is replaced by a reference into the archive (``dlq.archive_topic``, the
        archive key ``<bybit.topic>|<bybit.symbol>`` and ``bybit.received_ms``)."""
        log.warning("%s for %s: %s (frame sent to the dead-letter topic)", reason,
                    route.kafka_topic, detail)
        value = raw.encode() if isinstance(raw, str) else raw
        headers = [("bybit.stream", stream.encode()), ("bybit.topic", route.topic_id.encode()),
                   ("bybit.symbol", symbol.encode()),
                   ("bybit.received_ms", str(stamp.wall_ms).encode())]
        if len(value) > DEAD_LETTER_FRAME_MAX:
            archived = (self._archive.topic_for(stream, route.topic_id)
                        if self._archive is not None else None)
            headers.append(("dlq.frame_bytes", str(len(value)).encode()))
            if archived is not None:
                headers.append(("dlq.archive_topic", archived.encode()))
            else:
                detail = f"{detail} (frame of {len(value)} bytes not kept: archive it)"
            value = b""
        self._sink.dead_letter(value, reason, route.kafka_topic, detail, headers)


def _resync_marker(kind: str, data: V5Data, reason: str) -> dict[str, Any]:
    """The book marker record, from the v5 mappers (imported late: they live
    beside the legacy ones and are only needed once a v5 book is configured)."""
    make = getattr(records, "resync_marker", None)
    if make is None:
        make = importlib.import_module("connector.records.v5").resync_marker
    result: dict[str, Any] = make(kind, data, reason)
    return result
