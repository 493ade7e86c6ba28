"""The legacy spot protocol's side of the connection seam (see ``connector.bybit.family``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from connector.bybit.events import Ack, Event, MarketData, PrivateData, Stamp, Stream, SubError
from connector.bybit.family import AckInfo, DataInfo, Pair
from connector.bybit.legacy import frames, protocol
from connector.bybit.legacy.protocol import Request, Subscription


class LegacyFamily:
    """Bybit's legacy spot protocol (v1, v2, private): ``event: sub`` requests
    acknowledged with ``code``, ``{"ping": ms}`` heartbeats, auth that
    subscribes every private topic at once."""

    def __init__(self, stream: Stream, max_symbols_per_request: int = 20,
                 max_frame_bytes: int = frames.MAX_FRAME_BYTES) -> None:
        self.stream = stream
        self._max_bytes = max_frame_bytes
        self.needs_auth = self.auth_subscribes = stream == "private"
        self._per_request = max_symbols_per_request

    def pairs(self, sub: Subscription) -> list[Pair]:
        return sub.pairs()

    def subscribe(self, subs: Sequence[Subscription]) -> list[Request]:
        return [req for sub in subs for req in protocol.build_subscribe(sub, self._per_request)]

    def renew(self, request: Request) -> Request:
        return request

    def isolate(self, request: Request) -> list[Request]:
        return [request]

    def resubscribe(self, pair: Pair) -> tuple[list[Request], list[Request]]:
        return [], []  # legacy books carry no update ids to lose track of

    def ping(self, now_ms: int) -> str:
        return protocol.build_ping(now_ms)

    def pong(self, ts: int) -> str:
        return protocol.build_pong(ts)

    def auth(self, api_key: str, api_secret: str) -> str:
        return protocol.build_auth(api_key, api_secret, time.time_ns() // 1_000_000 + 10_000)

    def decode(self, raw: str | bytes, stamp: Stamp, binary: bool) -> Event:
        return frames.decode(raw, self.stream, stamp, binary=binary, max_bytes=self._max_bytes)

    def ack(self, event: Any) -> AckInfo | None:
        if isinstance(event, Ack):
            return AckInfo(event.ok, f"code {event.code}: {event.msg}",
                           topic=event.topic, symbol=event.symbol)
        if isinstance(event, SubError):
            return AckInfo(False, f"code {event.code}: {event.msg}",
                           topic=event.topic, symbol=event.symbol)
        return None

    def data(self, event: Any) -> DataInfo | None:
        if isinstance(event, MarketData):
            return DataInfo(((frames.market_topic_id(event), event.symbol),),
                            event.send_time_ms, event.send_time_ms)
        if isinstance(event, PrivateData):
            return DataInfo(tuple((str(e.get("e"))[:40], "") for e in event.events))
        return None
