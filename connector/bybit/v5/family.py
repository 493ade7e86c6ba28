"""The Bybit v5 side of the connection seam (see ``connector.bybit.family``).

Every request carries a unique ``req_id`` (spot and private acks name no
topic, so it is the only link between an ack and its request); public
requests hold at most 10 args, private ones one topic each; a failed
multi-arg request is isolated by re-sending its args one per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connector.bybit.events import Event, Stamp, Stream, V5Data
from connector.bybit.family import AckInfo, DataInfo, Pair
from connector.bybit.legacy.protocol import Request, Subscription
from connector.bybit.v5 import frames, protocol


class V5Family:
    """Bybit v5 spot public (``v5``) or private (``v5-private``)."""

    auth_subscribes = False

    def __init__(self, stream: Stream, ids: protocol.RequestIds | None = None) -> None:
        self.stream = stream
        self.needs_auth = stream == "v5-private"
        self._ids = ids or protocol.RequestIds(stream)

    def pairs(self, sub: Subscription) -> list[Pair]:
        return protocol.pairs_of(sub)

    def _build(self, op: str, pairs: tuple[Pair, ...]) -> Request:
        return protocol.build_op(op, self.stream, pairs, self._ids.next())

    def subscribe(self, subs: Sequence[Subscription]) -> list[Request]:
        pairs = [p for sub in subs for p in self.pairs(sub)]
        chunks = (protocol.private_chunks(pairs) if self.stream == "v5-private"
                  else protocol.chunk_pairs(pairs))
        return [self._build("subscribe", chunk) for chunk in chunks]

    def renew(self, request: Request) -> Request:
        return self._build(request.topic, request.pairs)

    def isolate(self, request: Request) -> list[Request]:
        if len(request.pairs) <= 1:
            return [request]
        return [self._build(request.topic, (pair,)) for pair in request.pairs]

    def resubscribe(self, pair: Pair) -> tuple[list[Request], list[Request]]:
        return [self._build("unsubscribe", (pair,))], [self._build("subscribe", (pair,))]

    def ping(self, now_ms: int) -> str:
        return protocol.build_ping(self._ids.next())

    def pong(self, ts: int) -> str:  # Bybit v5 sends no pings of its own
        return protocol.build_ping(self._ids.next())

    def auth(self, api_key: str, api_secret: str) -> str:
        return protocol.build_auth(api_key, api_secret, protocol.auth_expires(),
                                   self._ids.next())

    def decode(self, raw: str | bytes, stamp: Stamp, binary: bool) -> Event | frames.OpAck:
        return frames.decode(raw, self.stream, stamp, binary=binary)

    def ack(self, event: Any) -> AckInfo | None:
        if isinstance(event, frames.OpAck):
            return AckInfo(event.ok, event.msg, req_id=event.req_id, topic=event.op)
        return None

    def data(self, event: Any) -> DataInfo | None:
        if isinstance(event, V5Data):
            return DataInfo(((event.topic_id, event.symbol),),
                            server_time_ms=event.ts or event.creation_time)
        return None
