"""Bybit v5 spot protocol, client side, without sockets: endpoints, request
builders (subscribe, unsubscribe, ping, auth) with ``req_id``, signing, and
the split of subscriptions into requests and connections.

Limits (Bybit v5 "Connect" page): at most 10 args per subscribe request on a
spot public connection, at most 21,000 characters of args per public
connection. Bybit does not say how characters are counted, so we count
conservatively: the JSON-encoded length of the args (quotes and commas
included), cumulated over everything one connection ever subscribes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from connector.bybit.legacy.protocol import Request, Subscription, sign

ENDPOINTS: dict[str, dict[str, str]] = {
    "mainnet": {"v5": "wss://stream.bybit.com/v5/public/spot",
                "v5-private": "wss://stream.bybit.com/v5/private"},
    "testnet": {"v5": "wss://stream-testnet.bybit.com/v5/public/spot",
                "v5-private": "wss://stream-testnet.bybit.com/v5/private"},
}
MAX_ARGS_PER_REQUEST = 10  # spot public
MAX_ARGS_CHARS = 21_000  # per public connection
AUTH_EXPIRES_MS = 10_000  # slack for clock skew; Bybit only asks for "in the future"


def endpoint(network: str, stream: str) -> str:
    return ENDPOINTS[network][stream]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def arg(stream: str, topic_id: str, symbol: str) -> str:
    """The wire topic: ``orderbook.50.BTCUSDT`` (public) or ``order.spot`` (private)."""
    return topic_id if stream == "v5-private" or not symbol else f"{topic_id}.{symbol}"


def pairs_of(sub: Subscription) -> list[tuple[str, str]]:
    """(topic_id, symbol) pairs of a v5 subscription; private ones have symbol ``""``."""
    return [(sub.topic_id, s) for s in sub.symbols] if sub.symbols else [(sub.topic_id, "")]


def args_chars(args: list[str] | tuple[str, ...]) -> int:
    """Conservative length of ``args``: its JSON encoding."""
    return len(_dumps(list(args)))


class RequestIds:
    """Unique ``req_id`` values for one connection (``<prefix>-<n>``).

    The prefix carries the connection name and its start time, so ids stay
    unique across reconnects and connections; not thread-safe by itself
    (one connection thread uses it).
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}-{time.time_ns() // 1_000_000 % 10**9}"
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}-{self._n}"


def build_op(op: str, stream: str, pairs: tuple[tuple[str, str], ...], req_id: str) -> Request:
    """One ``subscribe``/``unsubscribe`` request for ``pairs``."""
    args = [arg(stream, t, s) for t, s in pairs]
    text = _dumps({"op": op, "req_id": req_id, "args": args})
    return Request(text, op, pairs, req_id)


def chunk_pairs(pairs: list[tuple[str, str]],
                per_request: int = MAX_ARGS_PER_REQUEST) -> list[tuple[tuple[str, str], ...]]:
    """Split pairs into request-sized chunks (the order is kept)."""
    return [tuple(pairs[i:i + per_request]) for i in range(0, len(pairs), per_request)]


def private_chunks(pairs: list[tuple[str, str]]) -> list[tuple[tuple[str, str], ...]]:
    """Private requests: one topic each. An all-in-one topic (``order``) and a
    categorised one (``order.spot``) must not share a request, and there are at
    most seven private topics, so one per request is simplest and always legal."""
    return [(p,) for p in pairs]


def build_ping(req_id: str) -> str:
    return _dumps({"op": "ping", "req_id": req_id})


def build_auth(api_key: str, api_secret: str, expires_ms: int, req_id: str) -> str:
    """``{"op":"auth","args":[key, expires_ms, signature]}``; the signature is the
    hex HMAC-SHA256 of ``"GET/realtime" + expires`` keyed by the secret."""
    return _dumps({"op": "auth", "req_id": req_id,
                   "args": [api_key, expires_ms, sign(api_secret, expires_ms)]})


def auth_expires(now_ms: int | None = None) -> int:
    """A fresh ``expires`` for one (re)connect."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return now + AUTH_EXPIRES_MS


@dataclass(frozen=True, slots=True)
class Plan:
    """One public connection's subscriptions and its args budget use."""

    subscriptions: tuple[Subscription, ...]
    chars: int


def plan_connections(subs: list[Subscription], max_pairs: int,
                     max_chars: int = MAX_ARGS_CHARS) -> list[list[Subscription]]:
    """Split public v5 subscriptions over connections so that none carries
    more than ``max_pairs`` (topic x symbol) pairs or more than ``max_chars``
    characters of args (counted as ``args_chars`` of all its args, plus the
    re-sends of isolation: a failed request's args are re-sent one per request,
    so the per-connection count is cumulative and we keep a 2x margin)."""
    groups: list[list[Subscription]] = [[]]
    pairs_room, chars_room = max_pairs, max_chars // 2
    for sub in subs:
        current: list[str] = []
        for symbol in sub.symbols:
            cost = args_chars([arg(sub.stream, sub.topic_id, symbol)])
            if pairs_room == 0 or cost > chars_room:
                if current:
                    groups[-1].append(_with(sub, current))
                    current = []
                groups.append([])
                pairs_room, chars_room = max_pairs, max_chars // 2
            current.append(symbol)
            pairs_room -= 1
            chars_room -= cost
        if current:
            groups[-1].append(_with(sub, current))
    return [g for g in groups if g]


def _with(sub: Subscription, symbols: list[str]) -> Subscription:
    return Subscription(sub.stream, sub.topic, tuple(symbols), sub.interval, sub.dump_scale,
                        sub.binary, sub.depth)
