"""Bybit spot WebSocket protocol, client side, without sockets: endpoints,
request builders (subscribe, cancel, ping, pong, auth) and signing."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from connector.bybit.events import Stream
from connector.bybit.topics import V5_STREAMS, topic_id, v5_topic_id

ENDPOINTS: dict[str, dict[str, str]] = {
    "mainnet": {
        "v1": "wss://stream.bybit.com/spot/quote/ws/v1",
        "v2": "wss://stream.bybit.com/spot/quote/ws/v2",
        "private": "wss://stream.bybit.com/spot/ws",
    },
    "testnet": {
        "v1": "wss://stream-testnet.bybit.com/spot/quote/ws/v1",
        "v2": "wss://stream-testnet.bybit.com/spot/quote/ws/v2",
        "private": "wss://stream-testnet.bybit.com/spot/ws",
    },
}


def endpoint(network: str, stream: str) -> str:
    return ENDPOINTS[network][stream]


@dataclass(frozen=True, slots=True)
class Subscription:
    """One configured topic on one stream for some symbols.

    ``topic`` is the Bybit topic as configured (``kline`` with ``interval``);
    private subscriptions have no symbols (auth subscribes to everything).
    """

    stream: Stream
    topic: str
    symbols: tuple[str, ...] = ()
    interval: str | None = None
    dump_scale: int | None = None
    binary: bool = False
    depth: int | None = None  # v5 orderbook

    @property
    def wire_topic(self) -> str:
        """The topic name on the wire: v1 klines are ``kline_<interval>``."""
        if self.stream == "v1" and self.topic == "kline":
            return f"kline_{self.interval}"
        return self.topic

    @property
    def topic_id(self) -> str:
        """Topic plus parameter, as used in metrics and Kafka topic names."""
        if self.stream in V5_STREAMS:
            return v5_topic_id(self.topic, self.interval, self.depth)
        return topic_id(self.topic, self.interval, self.dump_scale)

    def pairs(self) -> list[tuple[str, str]]:
        """(topic_id, symbol) pairs this subscription asks for."""
        return [(self.topic_id, s) for s in self.symbols]


@dataclass(frozen=True, slots=True)
class Request:
    """One subscribe message and the (topic_id, symbol) pairs it covers."""

    text: str
    topic: str  # wire topic, as the ack names it (v5: the op)
    pairs: tuple[tuple[str, str], ...]
    req_id: str | None = None  # v5: acks are matched by it


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def build_subscribe(sub: Subscription, max_symbols: int = 20, event: str = "sub",
                    symbols: tuple[str, ...] | None = None) -> list[Request]:
    """The messages that (un)subscribe ``sub`` (only ``symbols`` if given).

    v1 sends comma-joined symbol lists of at most ``max_symbols``; v2 one
    message per symbol with the symbol in ``params``.
    """
    symbols = sub.symbols if symbols is None else symbols
    out = []
    if sub.stream == "v1":
        params: dict[str, Any] = {"binary": sub.binary}
        if sub.dump_scale is not None:
            params["dumpScale"] = sub.dump_scale
        for i in range(0, len(symbols), max_symbols):
            chunk = symbols[i:i + max_symbols]
            text = _dumps({"symbol": ",".join(chunk), "topic": sub.wire_topic, "event": event,
                           "params": params})
            out.append(Request(text, sub.wire_topic, tuple((sub.topic_id, s) for s in chunk)))
    elif sub.stream == "v2":
        for symbol in symbols:
            params = {"symbol": symbol, "binary": sub.binary}
            if sub.interval is not None:
                params = {"symbol": symbol, "klineType": sub.interval, "binary": sub.binary}
            text = _dumps({"topic": sub.topic, "event": event, "params": params})
            out.append(Request(text, sub.topic, ((sub.topic_id, symbol),)))
    return out


def build_ping(now_ms: int) -> str:
    return _dumps({"ping": now_ms})


def build_pong(ts: int) -> str:
    return _dumps({"pong": ts})


def sign(api_secret: str, expires: int) -> str:
    """Lowercase hex HMAC-SHA256 of ``GET/realtime{expires}`` keyed by the secret."""
    return hmac.new(api_secret.encode(), f"GET/realtime{expires}".encode(),
                    hashlib.sha256).hexdigest()


def build_auth(api_key: str, api_secret: str, expires: int) -> str:
    return _dumps({"op": "auth", "args": [api_key, expires, sign(api_secret, expires)]})


def plan_connections(stream: str, subs: list[Subscription], cap: int) -> list[list[Subscription]]:
    """Split a stream's subscriptions over connections of at most ``cap``
    (topic x symbol) pairs each, splitting a subscription's symbols if needed."""
    groups: list[list[Subscription]] = [[]]
    room = cap
    for sub in subs:
        symbols = list(sub.symbols)
        while symbols:
            if room == 0:
                groups.append([])
                room = cap
            take, symbols = symbols[:room], symbols[room:]
            groups[-1].append(Subscription(sub.stream, sub.topic, tuple(take), sub.interval,
                                           sub.dump_scale, sub.binary))
            room -= len(take)
    return [g for g in groups if g]
