"""Raw WebSocket frame → one typed event. Pure; never raises.

Text frames are JSON. Binary frames (``binary: true`` subscriptions) are
compressed; Bybit does not document the codec, so it is recognised by its
magic bytes: gzip (``1f 8b``), zlib (``78 01/5e/9c/da``), raw deflate as the
last resort.

Size: no frame is held whole above ``max_bytes`` (``bybit.max_frame_bytes``,
default 8 MiB, far above any real Bybit frame: a 1,000-level book is ~60 KB).
The reader (``wire.py``) hands over an ``Oversize`` (size and first bytes)
instead, and decompression stops at the same cap (zip bombs); both become
``Undecodable`` with reason ``frame_too_large``, dead-lettered by reference.

Shapes recognised (see the protocol reference): pong, server ping, auth
result, subscribe ack (``code`` "0" or not, with ``msg``), the unnamed error
``{"code", "desc"}``, v1 data (``data`` list, ``sendTime``, ``f``), v2 data
(``data`` object, symbol in ``params``), private events (a list, or a bare
object, of events with ``e``). Everything else becomes ``Undecodable`` with a
reason from ``metrics.UNDECODABLE_REASONS`` so it reaches the dead-letter
topic instead of vanishing.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, replace
from typing import Any

from connector.bybit.events import (
    Ack,
    AuthResult,
    Event,
    MarketData,
    Pong,
    PrivateData,
    ServerPing,
    Stamp,
    Stream,
    SubError,
    Undecodable,
)

MAX_FRAME_BYTES = 8 * 1024 * 1024  # default of bybit.max_frame_bytes
MAX_DECOMPRESSED = MAX_FRAME_BYTES  # kept for callers of decompress()
HEAD_BYTES = 1024  # what a dead letter keeps of a frame over the cap
_ZLIB_SECOND = (0x01, 0x5E, 0x9C, 0xDA)
_TRUE_STRINGS = ("true", "True", "TRUE", "1")


class TooLarge(ValueError):
    """Decompressing would exceed the size cap."""


@dataclass(frozen=True, slots=True)
class Oversize:
    """A data message over the cap, read through but not kept: its size and first bytes.

    ``opcode`` is the WebSocket opcode of the message (text or binary).
    """

    opcode: int
    size: int
    head: bytes
    limit: int

    def grown(self, n: int) -> Oversize:
        return replace(self, size=self.size + n)

    def with_head(self, chunk: bytes) -> Oversize:
        return replace(self, head=(self.head + chunk)[:HEAD_BYTES])


def market_topic_id(data: MarketData) -> str:
    """The subscription a data frame belongs to: ``kline_1m``, ``mergedDepth_1``, ``trade``.

    Bybit sends v1 klines as topic ``kline`` with the interval in
    ``params.klineType`` and echoes ``dumpScale`` in params.
    """
    topic = data.topic
    if topic == "kline":
        return f"kline_{data.params.get('klineType')}"
    if topic == "mergedDepth":
        return f"mergedDepth_{data.params.get('dumpScale')}"
    return topic


def decompress(raw: bytes, max_bytes: int = MAX_FRAME_BYTES) -> bytes:
    """Inflate a compressed frame; raises ``ValueError`` if it is none of the codecs,
    ``TooLarge`` past ``max_bytes``."""
    if raw[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif len(raw) >= 2 and raw[0] == 0x78 and raw[1] in _ZLIB_SECOND:
        wbits = zlib.MAX_WBITS
    else:
        wbits = -zlib.MAX_WBITS
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(raw, max_bytes)
        if inflater.unconsumed_tail:
            raise TooLarge(f"decompressed frame exceeds bybit.max_frame_bytes ({max_bytes})")
        if not inflater.eof:
            raise ValueError("truncated compressed frame")
        return out
    except zlib.error as exc:
        raise ValueError(f"not gzip, zlib or deflate: {exc}") from exc


def decode(raw: str | bytes | Oversize, stream: Stream, stamp: Stamp, binary: bool = False,
           max_bytes: int = MAX_FRAME_BYTES) -> Event:
    """Decode one frame. ``binary`` is True for WebSocket binary frames."""
    if isinstance(raw, Oversize):
        return Undecodable(raw.head, "frame_too_large",
                           f"frame of {raw.size} bytes exceeds bybit.max_frame_bytes "
                           f"({raw.limit}); the dead letter holds its first {len(raw.head)} "
                           "bytes", stream, stamp)
    try:
        return _decode(raw, stream, stamp, binary, max_bytes)
    except Exception as exc:
        return _bad(raw, "unknown_shape", f"{type(exc).__name__}: {exc}", stream, stamp)


def _bad(raw: str | bytes, reason: str, detail: str, stream: Stream, stamp: Stamp) -> Undecodable:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return Undecodable(data, reason, detail[:300], stream, stamp)


def _decode(raw: str | bytes, stream: Stream, stamp: Stamp, binary: bool,
            max_bytes: int) -> Event:
    text: str | bytes = raw
    if binary:
        try:
            text = decompress(raw.encode() if isinstance(raw, str) else raw, max_bytes)
        except TooLarge as exc:
            return _bad(raw, "frame_too_large", str(exc), stream, stamp)
        except ValueError as exc:
            return _bad(raw, "decompress_failed", str(exc), stream, stamp)
    try:
        # Strict UTF-8 (RFC 6455 text): json.loads(bytes) alone would also take
        # UTF-16/32 and encoded surrogates.
        msg = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as exc:
        return _bad(raw, "invalid_utf8", str(exc), stream, stamp)
    except (ValueError, RecursionError) as exc:
        return _bad(raw, "invalid_json", str(exc), stream, stamp)
    size = len(text)
    if isinstance(msg, dict):
        return _decode_object(msg, raw, stream, stamp, size)
    if isinstance(msg, list) and stream == "private":
        return _private(msg, raw, stream, stamp, size)
    return _bad(raw, "unknown_shape", f"a JSON {type(msg).__name__} is no known frame", stream,
                stamp)


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _first(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value in _TRUE_STRINGS
    return None


def _decode_object(msg: dict[str, Any], raw: str | bytes, stream: Stream, stamp: Stamp,
                   size: int) -> Event:
    data = msg.get("data")
    if data is not None and "topic" in msg:
        return _market(msg, data, raw, stream, stamp, size)
    if "pong" in msg and len(msg) == 1:
        ts = _int(msg["pong"])
        if ts is not None:
            return Pong(ts)
    if "ping" in msg and len(msg) == 1:
        ts = _int(msg["ping"])
        if ts is not None:
            return ServerPing(ts)
    if "auth" in msg:
        result = msg["auth"]
        return AuthResult(result == "success", str(result)[:100])
    if "code" in msg:
        code = str(msg["code"])
        text = str(msg.get("msg") if msg.get("msg") is not None else msg.get("desc", ""))
        params: dict[str, Any] = msg["params"] if isinstance(msg.get("params"), dict) else {}
        topic = msg.get("topic") if isinstance(msg.get("topic"), str) else None
        symbol = msg.get("symbol") if isinstance(msg.get("symbol"), str) else None
        if symbol is None and isinstance(params.get("symbol"), str):
            symbol = params["symbol"]
        if "event" in msg or (topic is not None and code == "0"):
            return Ack(topic, symbol, msg.get("event"), params, code, text)
        return SubError(code, text, topic, symbol)
    if stream == "private" and isinstance(msg.get("e"), str):
        return PrivateData((msg,), stamp, size, raw)
    return _bad(raw, "unknown_shape", f"object with keys {sorted(msg)[:8]}", stream, stamp)


def _market(msg: dict[str, Any], data: Any, raw: str | bytes, stream: Stream, stamp: Stamp,
            size: int) -> Event:
    topic = msg["topic"]
    params = msg.get("params")
    if not isinstance(params, dict):
        params = {}
    if not isinstance(topic, str):
        return _bad(raw, "unknown_shape", "topic is not a string", stream, stamp)
    if topic.startswith("kline_"):  # be lenient: some frames may echo the subscribed name
        params = {**params, "klineType": params.get("klineType", topic[6:])}
        topic = "kline"
    if isinstance(data, list):  # v1 envelope
        symbol = msg.get("symbol")
        if not isinstance(symbol, str):
            return _bad(raw, "unknown_shape", "v1 data frame without a symbol", stream, stamp)
        if not all(isinstance(item, dict) for item in data):
            return _bad(raw, "unknown_shape", "v1 data items must be objects", stream, stamp)
        return MarketData(stream, topic, symbol, params, tuple(data),
                          _first(msg.get("f")), _int(msg.get("sendTime")), stamp, size, raw, msg)
    if isinstance(data, dict):  # v2 envelope
        symbol = params.get("symbol")
        if not isinstance(symbol, str):
            symbol = data.get("s", data.get("symbol"))
        if not isinstance(symbol, str):
            return _bad(raw, "unknown_shape", "v2 data frame without a symbol", stream, stamp)
        return MarketData(stream, topic, symbol, params, (data,),
                          _first(msg.get("f")), _int(msg.get("sendTime")), stamp, size, raw, msg)
    return _bad(raw, "unknown_shape", "data is neither a list nor an object", stream, stamp)


def _private(msg: list[Any], raw: str | bytes, stream: Stream, stamp: Stamp, size: int) -> Event:
    if not msg or not all(isinstance(e, dict) and isinstance(e.get("e"), str) for e in msg):
        return _bad(raw, "unknown_shape", "private frame is not a list of events", stream, stamp)
    return PrivateData(tuple(msg), stamp, size, raw)
