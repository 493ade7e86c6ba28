"""Connects the stages: exchange event → map to records → serialize → produce.

``Pipeline.handle`` is the ``on_event`` callback of every connection; it runs
on the connection's thread (no extra queue hop, so no extra copy or latency)
and returns quickly unless Kafka's buffer is full, where the sink's
backpressure policy bounds the wait. It owns replay de-duplication and the
dead-letter routing of anything that cannot be mapped or serialized.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector import metrics, records
from connector.bybit.events import Event, MarketData, PrivateData, Undecodable
from connector.bybit.frames import market_topic_id
from connector.config import Config, SubscriptionConfig
from connector.dedup import RecentIds
from connector.errors import ConnectorError, SerializationError
from connector.serde import Serializer

log = logging.getLogger(__name__)

DEDUP_CAPACITY = 1000  # ids remembered per (stream, symbol); Bybit replays 60


class Sink(Protocol):
    """What the pipeline needs of the Kafka side (see ``sink.KafkaSink``)."""

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int) -> bool:
        raise NotImplementedError

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None: ...


@dataclass(slots=True)
class Route:
    """Where one configured Bybit topic goes and how it is written."""

    stream: str
    topic_id: str
    kind: str
    kafka_topic: str
    mapper: Callable[..., Any]
    serializer: Serializer
    headers: list[tuple[str, bytes]]
    dedup_field: str | None = None
    dedup: dict[str, RecentIds] = field(default_factory=dict)
    lag: Any = None


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
    headers = [
        ("bybit.stream", sub.stream.encode()),
        ("bybit.topic", sub.topic_id.encode()),
        *serializer.headers,
    ]
    return Route(
        stream=sub.stream, topic_id=sub.topic_id, kind=kind, kafka_topic=kafka_topic,
        mapper=records.MAPPERS[kind], serializer=serializer, headers=headers,
        dedup_field="trade_id" if sub.topic == "trade" else None,
        lag=metrics.event_lag_seconds.labels(sub.stream, sub.topic_id),
    )


class Pipeline:
    """Maps, serializes and sends every event a connection hands it."""

    def __init__(self, routes: dict[tuple[str, str], Route], sink: Sink) -> None:
        self._routes = routes
        self._sink = sink
        for route in routes.values():
            metrics.duplicates_suppressed_total.labels(route.stream, route.topic_id)
            metrics.event_lag_seconds.labels(route.stream, route.topic_id)

    def handle(self, event: Event) -> None:
        """The connections' ``on_event``. Never raises for bad data."""
        if isinstance(event, MarketData):
            route = self._routes.get((event.stream, market_topic_id(event)))
            if route is None:
                metrics.unrouted_events_total.labels(event.stream, metrics.UNKNOWN).inc()
                return
            self._write_market(route, event)
        elif isinstance(event, PrivateData):
            self._write_private(event)
        elif isinstance(event, Undecodable):
            raw = event.raw
            self._sink.dead_letter(
                raw, "undecodable_frame", f"stream:{event.stream}", event.detail,
                [("dlq.undecodable_reason", event.reason.encode()),
                 ("bybit.stream", event.stream.encode()),
                 ("bybit.received_ms", str(event.stamp.wall_ms).encode())])

    def _write_market(self, route: Route, data: MarketData) -> None:
        try:
            recs = route.mapper(data)
        except ConnectorError as exc:
            self._dead_letter_frame(data.raw, "mapping_failed", route, str(exc), data.stream)
            return
        # Key and headers are the same for every record of a frame: built once.
        # (kafka-python encodes headers as it appends, so sharing the list is safe.)
        key = data.symbol.encode()
        headers = [*route.headers, ("bybit.received_ms", str(data.stamp.wall_ms).encode())]
        for rec in recs:
            if route.dedup_field is not None and not self._first_time(route, rec):
                continue
            self._send(route, rec, key, headers, data.stamp.mono_ns, data.stamp.wall_ms,
                       data.raw)

    def _first_time(self, route: Route, rec: dict[str, Any]) -> bool:
        symbol = rec.get("symbol", "")
        seen = route.dedup.get(symbol)
        if seen is None:
            seen = route.dedup.setdefault(symbol, RecentIds(DEDUP_CAPACITY))
        if seen.add(rec[route.dedup_field]):  # type: ignore[index]
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
                self._dead_letter_frame(data.raw, "mapping_failed", route, str(exc), "private")
                continue
            key = records.record_key(route.kind, rec)
            headers = [*route.headers,
                       ("bybit.received_ms", str(data.stamp.wall_ms).encode())]
            self._send(route, rec, key, headers, data.stamp.mono_ns, data.stamp.wall_ms,
                       data.raw)

    def _send(self, route: Route, rec: dict[str, Any], key: bytes,
              headers: list[tuple[str, bytes]], mono_ns: int, wall_ms: int,
              raw: str | bytes) -> None:
        try:
            value = route.serializer(rec)
        except SerializationError as exc:
            self._dead_letter_frame(raw, "serialization_failed", route, str(exc), route.stream)
            return
        event_time = rec.get("event_time")
        if isinstance(event_time, int):
            route.lag.observe(max(0.0, (wall_ms - event_time) / 1000.0))
        self._sink.send(route.kafka_topic, key, value, headers, mono_ns)

    def _dead_letter_frame(self, raw: str | bytes, reason: str, route: Route, detail: str,
                           stream: str) -> None:
        log.warning("%s for %s: %s (frame sent to the dead-letter topic)", reason,
                    route.kafka_topic, detail)
        value = raw.encode() if isinstance(raw, str) else raw
        self._sink.dead_letter(value, reason, route.kafka_topic, detail,
                               [("bybit.stream", stream.encode()),
                                ("bybit.topic", route.topic_id.encode())])
