"""The seam between the one connection loop and a protocol family.

``connection.Connection`` runs the same loop for every stream (connect,
heartbeat, backoff, auth, subscribe, ack matching, resubscribe); what differs
between the legacy spot protocol (v1, v2, private) and Bybit v5 (v5,
v5-private) lives behind ``Family``: how requests, pings and auth look, how a
frame decodes, how an ack names what it answers, and which subscription a
data frame belongs to. ``connection.family_for(stream)`` picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from connector.bybit.events import (
    Stamp,
    Stream,
)
from connector.bybit.legacy.protocol import Request, Subscription

Pair = tuple[str, str]  # (topic_id, symbol); symbol "" on private streams


@dataclass(frozen=True, slots=True)
class AckInfo:
    """What an acknowledgement answers and whether it succeeded.

    Matched by ``req_id`` when there is one (v5), else by topic/symbol, else it
    answers the oldest pending request (legacy errors name nothing)."""

    ok: bool
    detail: str
    req_id: str | None = None
    topic: str | None = None
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class DataInfo:
    """Which subscriptions a data frame belongs to (for metrics and implicit acks)."""

    pairs: tuple[Pair, ...]
    send_time_ms: int | None = None
    # The exchange's own time of the frame (v5 ts or creationTime, v1 sendTime), for
    # read_lag_seconds: how far behind its socket the connector reads.
    server_time_ms: int | None = None


class Family(Protocol):
    """The protocol differences of one stream family (see module doc)."""

    stream: Stream
    needs_auth: bool  # private streams authenticate before subscribing
    auth_subscribes: bool  # legacy private: auth itself subscribes every topic

    def pairs(self, sub: Subscription) -> list[Pair]: ...

    def subscribe(self, subs: Sequence[Subscription]) -> list[Request]: ...

    def renew(self, request: Request) -> Request:
        """The request to re-send after a failure (v5: with a fresh ``req_id``)."""
        ...

    def isolate(self, request: Request) -> list[Request]:
        """After an error ack: the requests to find the bad topic (v5: one per
        arg), or ``[request]`` where the failure is already specific."""
        ...

    def resubscribe(self, pair: Pair) -> tuple[list[Request], list[Request]]:
        """(unsubscribe, subscribe) requests that restart one topic's stream."""
        ...

    def ping(self, now_ms: int) -> str: ...

    def pong(self, ts: int) -> str: ...

    def auth(self, api_key: str, api_secret: str) -> str: ...

    def decode(self, raw: str | bytes, stamp: Stamp, binary: bool) -> Any: ...

    def ack(self, event: Any) -> AckInfo | None: ...

    def data(self, event: Any) -> DataInfo | None: ...
