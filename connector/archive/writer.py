"""The raw frame archive: every data frame as received, before mapping.

``Pipeline.handle`` hands each event to ``Archive.write`` first, so a frame
the mapper later rejects is archived all the same. One record per frame,
Avro (``avro/raw_frame.avsc``), written through the pipeline's sink (same
producer, bound, accounting and dead letters as the typed records) to
``archive.topic_template`` (``bybit.raw.{stream}``). The key is
``<bybit topic>|<symbol>``: one Bybit topic and symbol stays in one
partition, in the order received, which ``replay`` relies on for books.

Legacy binary frames are archived decompressed (``decompressed`` true) so
that ``replay`` reads every record as text. Frames that did not decode are
archived as received (``decoded`` false) when their stream archives anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.bybit.events import Event, MarketData, PrivateData, Undecodable, V5Data
from connector.bybit.legacy.frames import decompress, market_topic_id
from connector.config.model import Config
from connector.errors import SerializationError
from connector.pipeline.core import Sink
from connector.serde.serializers import Serializer

KIND = "raw_frame"  # avro/raw_frame.avsc
KEY_SEPARATOR = "|"


@dataclass(frozen=True, slots=True)
class RawFrame:
    """What is archived of one frame (the fields of ``raw_frame.avsc``)."""

    received_time: int
    stream: str
    connection: str
    bybit_topic: str
    symbol: str
    decompressed: bool
    decoded: bool
    frame: bytes

    def key(self) -> bytes:
        return archive_key(self.bybit_topic, self.symbol)


def archive_key(bybit_topic: str, symbol: str) -> bytes:
    """The archive record key of one Bybit topic and symbol."""
    return f"{bybit_topic}{KEY_SEPARATOR}{symbol}".encode()


def archived_subscriptions(config: Config) -> set[tuple[str, str]]:
    """(stream, topic id) of every subscription whose frames are archived."""
    default = config.archive.enabled
    return {(s.stream, s.topic_id) for s in config.subscriptions
            if (s.archive if s.archive is not None else default)}


def archive_topics(config: Config) -> list[str]:
    """The raw topics the config writes (to create at start)."""
    return sorted({config.archive.topic(stream) for stream, _ in archived_subscriptions(config)})


def _as_bytes(raw: str | bytes) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def _text(raw: str | bytes, size: int = 0) -> tuple[bytes, bool]:
    """The frame's text and whether it had to be decompressed. ``size`` is the
    decoded text's length as the decoder saw it: a frame whose bytes differ in
    length was a compressed binary frame (without it, a frame that decoded
    either starts as JSON or was compressed)."""
    if isinstance(raw, str):  # only text frames arrive as str
        return raw.encode(), False
    packed = len(raw) != size if size else raw.lstrip()[:1] not in (b"{", b"[")
    return (decompress(raw), True) if packed else (raw, False)


def raw_frame(event: Event, connection: str) -> RawFrame | None:
    """The archive record of a data event (None for other events)."""
    if isinstance(event, MarketData):
        text, packed = _text(event.raw, event.size)
        return RawFrame(event.stamp.wall_ms, event.stream, connection, market_topic_id(event),
                        event.symbol, packed, True, text)
    if isinstance(event, V5Data):
        text, packed = _text(event.raw)
        return RawFrame(event.stamp.wall_ms, event.stream, connection, event.topic_id,
                        event.symbol, packed, True, text)
    if isinstance(event, PrivateData):
        text, packed = _text(event.raw, event.size)
        names = sorted({str(e.get("e")) for e in event.events if isinstance(e.get("e"), str)})
        return RawFrame(event.stamp.wall_ms, "private", connection, ",".join(names), "",
                        packed, True, text)
    if isinstance(event, Undecodable):
        return RawFrame(event.stamp.wall_ms, event.stream, connection, "", "", False, False,
                        event.raw)
    return None


class Archive:
    """Writes the archive record of every frame of an archived subscription.

    Runs on the connection threads (``Pipeline.handle``), like the pipeline:
    one serialize and one ``sink.send`` per frame. A record the sink cannot
    take is counted by the sink (``dropped_records_total``); a record that
    does not serialize is dead-lettered with the frame.
    """

    def __init__(self, config: Config, serializer_for: Callable[[str, str], Serializer],
                 sink: Sink) -> None:
        self._archived = archived_subscriptions(config)
        self._streams = {stream for stream, _ in self._archived}
        self._topics = {stream: config.archive.topic(stream) for stream in self._streams}
        self._serializers = {stream: serializer_for(KIND, topic)
                             for stream, topic in self._topics.items()}
        self._sink = sink

    def topic_for(self, stream: str, topic_id: str) -> str | None:
        """The raw topic of a subscription's frames, None if it is not archived."""
        return self._topics[stream] if (stream, topic_id) in self._archived else None

    def wants(self, frame: RawFrame) -> bool:
        if frame.stream not in self._streams:
            return False
        if not frame.decoded:
            return True
        if frame.stream == "private":  # one frame may carry several event types
            return any(("private", name) in self._archived
                       for name in frame.bybit_topic.split(","))
        return (frame.stream, frame.bybit_topic) in self._archived

    def write(self, event: Event, connection: str | None = None) -> None:
        """Archive ``event`` if its subscription is archived. Never raises for bad data."""
        stream = getattr(event, "stream", "private")
        if stream not in self._streams:
            return
        try:
            frame = raw_frame(event, connection or threading.current_thread().name)
        except ValueError as exc:  # a binary frame that decoded cannot fail here; be safe
            self._sink.dead_letter(_as_bytes(getattr(event, "raw", b"")), "archive_failed",
                                   f"stream:{stream}", str(exc))
            return
        if frame is None or not self.wants(frame):
            return
        serializer = self._serializers[frame.stream]
        try:
            value = serializer(_record(frame))
        except SerializationError as exc:
            self._sink.dead_letter(frame.frame, "archive_failed", f"stream:{stream}", str(exc))
            return
        self._sink.send(self._topics[frame.stream], frame.key(), value,
                        [("bybit.stream", frame.stream.encode()), *serializer.headers],
                        _mono_ns(event))


def _record(frame: RawFrame) -> dict[str, Any]:
    return {"received_time": frame.received_time, "stream": frame.stream,
            "connection": frame.connection, "bybit_topic": frame.bybit_topic,
            "symbol": frame.symbol, "decompressed": frame.decompressed,
            "decoded": frame.decoded, "frame": frame.frame}


def _mono_ns(event: Event) -> int:
    stamp = getattr(event, "stamp", None)
    return stamp.mono_ns if stamp is not None else 0
