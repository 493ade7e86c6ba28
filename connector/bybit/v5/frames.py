"""Raw Bybit v5 frame → one typed event. Pure; never raises.

Shapes (public spot and private; see the v5 protocol digest):

* data: ``{"topic", "ts", "type", "data", "cts"?, "cs"?}`` (public) or
  ``{"id"?, "topic", "creationTime", "data"}`` (private) → ``V5Data``;
* ``{"op":"subscribe"|"unsubscribe", "success", "ret_msg", "req_id"?}`` → ``OpAck``
  (spot and private acks name no topic: the ``req_id`` is the only link);
* ``{"op":"auth", "success", "ret_msg"}`` → ``AuthResult``;
* pongs, both shapes: public spot ``{"success":true,"ret_msg":"pong","op":"ping"}``
  and private ``{"op":"pong","args":["<ms>"]}`` → ``Pong`` (``ts`` is the
  server's ms where it sends one, else 0: RTT is measured from our send).

Everything else becomes ``Undecodable`` with a reason from
``metrics.UNDECODABLE_REASONS``, so it reaches the dead-letter topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from connector.bybit.events import AuthResult, Event, Pong, Stamp, Stream, Undecodable, V5Data

ALREADY_SUBSCRIBED = "already subscribed"


@dataclass(frozen=True, slots=True)
class OpAck:
    """Answer to a v5 ``subscribe``/``unsubscribe`` (or any other op).

    ``ok`` is ``success``, except that ``error:already subscribed`` counts as
    success: the subscription is active, which is what we asked for.
    """

    op: str
    req_id: str | None
    success: bool
    msg: str

    @property
    def ok(self) -> bool:
        return self.success or ALREADY_SUBSCRIBED in self.msg


def decode(raw: str | bytes, stream: Stream, stamp: Stamp,
           binary: bool = False) -> Event | OpAck:
    """Decode one v5 frame. v5 sends no binary frames; one is ``unexpected_binary``."""
    if binary:
        return _bad(raw, "unexpected_binary", "v5 sends text frames only", stream, stamp)
    try:  # strict UTF-8 (RFC 6455 text); json.loads(bytes) would take UTF-16/32 too
        msg = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        return _bad(raw, "invalid_utf8", str(exc), stream, stamp)
    except (ValueError, RecursionError) as exc:
        return _bad(raw, "invalid_json", str(exc), stream, stamp)
    try:
        if isinstance(msg, dict):
            return _object(msg, raw, stream, stamp)
    except Exception as exc:  # a shape we did not foresee must not kill the connection
        return _bad(raw, "unknown_shape", f"{type(exc).__name__}: {exc}", stream, stamp)
    return _bad(raw, "unknown_shape", f"a JSON {type(msg).__name__} is no v5 frame", stream,
                stamp)


def _bad(raw: str | bytes, reason: str, detail: str, stream: Stream, stamp: Stamp) -> Undecodable:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return Undecodable(data, reason, detail[:300], stream, stamp)


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _object(msg: dict[str, Any], raw: str | bytes, stream: Stream, stamp: Stamp) -> Event | OpAck:
    if "topic" in msg and "data" in msg:
        return _data(msg, raw, stream, stamp)
    op = msg.get("op")
    if op == "pong":
        args = msg.get("args")
        ts = _int(args[0]) if isinstance(args, list) and args else None
        return Pong(ts or 0)
    if op == "ping" and msg.get("ret_msg") == "pong":
        return Pong(0)
    if "success" in msg and isinstance(msg.get("success"), bool):
        text = msg.get("ret_msg")
        detail = text if isinstance(text, str) else ""
        if op == "auth":
            return AuthResult(msg["success"], detail[:100])
        req_id = msg.get("req_id")
        return OpAck(op if isinstance(op, str) else "",
                     req_id if isinstance(req_id, str) and req_id else None,
                     msg["success"], detail[:300])
    return _bad(raw, "unknown_shape", f"object with keys {sorted(msg)[:8]}", stream, stamp)


def _data(msg: dict[str, Any], raw: str | bytes, stream: Stream, stamp: Stamp) -> Event:
    topic = msg["topic"]
    if not isinstance(topic, str) or not topic:
        return _bad(raw, "unknown_shape", "topic is not a string", stream, stamp)
    data = msg["data"]
    if isinstance(data, dict):
        items: tuple[dict[str, Any], ...] = (data,)
    elif isinstance(data, list) and all(isinstance(item, dict) for item in data):
        items = tuple(data)
    else:
        return _bad(raw, "unknown_shape", "data is neither an object nor a list of objects",
                    stream, stamp)
    if stream == "v5-private":
        topic_id, symbol = topic, ""
    else:
        topic_id, _, symbol = topic.rpartition(".")
        if not topic_id or not symbol:
            return _bad(raw, "unknown_shape", f"public topic {topic[:60]!r} names no symbol",
                        stream, stamp)
    kind = msg.get("type")
    msg_id = msg.get("id")
    return V5Data(
        stream=stream, topic=topic, topic_id=topic_id, symbol=symbol,
        type=kind if isinstance(kind, str) else None,
        ts=_int(msg.get("ts")), cts=_int(msg.get("cts")), cs=_int(msg.get("cs")),
        msg_id=msg_id if isinstance(msg_id, str) else None,
        creation_time=_int(msg.get("creationTime")),
        items=items, stamp=stamp, size=len(raw), raw=raw, frame=msg)
