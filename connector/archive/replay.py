"""``replay``: re-derive the typed topics from the raw frame archive or the
dead-letter topic.

Each selected source record becomes the frame it was (stream, bytes, receive
time) and goes through today's decoders and a ``Pipeline`` built from the
config, exactly as a live frame would: same mappers, keys, headers, schemas,
book continuity checks and sink. Only the sink differs:
``replay_presence.PresenceFilter`` sits in front of it and writes nothing the
typed topic already holds (ids per record kind; books per segment, framed by
markers when spliced into a book the topic holds: see that module). What is
present is read from the tail of each typed topic with ``tail.read_tail``
(``tail`` records per partition) before anything is written, and grows as
replay writes, so replaying twice writes nothing the second time.

Frames that still fail are counted (``still_failing``), never written to the
dead-letter topic a second time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import fastavro
from kafka import KafkaConsumer, TopicPartition

from connector import records
from connector.archive import writer as archive
from connector.archive.presence import (  # noqa: F401 (Summary, identity: replay's API)
    PresenceFilter,
    Summary,
    identity,
    millis,
)
from connector.bybit.events import Event, Stamp
from connector.bybit.legacy import frames
from connector.bybit.v5 import frames as v5_frames
from connector.config.model import Config
from connector.errors import ConnectorError
from connector.pipeline.core import Pipeline, Sink, build_routes
from connector.pipeline.tail import decode_value, read_tail
from connector.sink.kafka_sink import producer_settings

log = logging.getLogger(__name__)

TAIL = 500_000  # typed records per partition read to know what is present
PROGRESS_EVERY = 10_000  # source records between two progress lines
REPLAY_REASONS = ("mapping_failed", "serialization_failed", "undecodable_frame")


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


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One frame to replay, from an archive record or a dead letter."""

    stream: str
    topic_id: str
    symbol: str
    received_ms: int
    frame: bytes


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
                           int(millis(rec["received_time"])), rec["frame"])
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
    from connector.sink.kafka_sink import KafkaSink, ensure_topics

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
