"""The running connector: builds every stage from the config, starts them in
order, and stops them in the reverse order so nothing accepted is lost.

Start: metrics/health listener → Kafka sink (+ schema registry ids) →
pipeline → WebSocket connections. Stop (SIGTERM/SIGINT): connections first
(stop reading), then flush Kafka within ``kafka.flush_timeout_seconds``,
then close the listener.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from connector import coordination, metrics, records
from connector.bybit import connection as bybit_connection
from connector.bybit import protocol
from connector.config import Config
from connector.health import HealthServer, Liveness
from connector.pipeline import Pipeline, build_routes
from connector.registry import SchemaRegistryClient, subject_for
from connector.serde import ConfluentSerializer, PlainAvroSerializer, Serializer, canonical_schema
from connector.sink import KafkaSink, ensure_topics

log = logging.getLogger(__name__)


def serializer_factory(config: Config) -> Callable[[str, str], Serializer]:
    """``(kind, kafka_topic) -> Serializer`` for the configured format.

    In ``confluent`` mode the schema is registered (or looked up) under
    ``<kafka_topic>-value`` right here, at startup, so an incompatible schema
    fails the start with the registry's message instead of failing records.
    """
    ser = config.serialization
    if ser.format == "avro":
        plain: dict[str, PlainAvroSerializer] = {}

        def plain_for(kind: str, _topic: str) -> Serializer:
            if kind not in plain:
                plain[kind] = PlainAvroSerializer(records.load_schema(kind))
            return plain[kind]

        return plain_for
    reg = ser.schema_registry
    assert reg.url is not None, "validated at load time"
    client = SchemaRegistryClient(reg.url, reg.username,
                                  reg.password.get() if reg.password else None)

    def confluent_for(kind: str, topic: str) -> Serializer:
        schema = records.load_schema(kind)
        text = canonical_schema(schema)
        subject = subject_for(topic)
        schema_id = (client.register(subject, text) if reg.auto_register
                     else client.lookup(subject, text))
        return ConfluentSerializer(schema, schema_id)

    return confluent_for


def build_connections(config: Config, on_event: Callable[[Any], None],
                      name_suffix: str = "") -> list[bybit_connection.Connection]:
    """One connection per stream, more where a stream exceeds the per-connection cap."""
    bybit = config.bybit
    creds = bybit.credentials
    by_stream: dict[str, list[protocol.Subscription]] = {}
    for sub in config.subscriptions:
        by_stream.setdefault(sub.stream, []).append(protocol.Subscription(
            stream=sub.stream, topic=sub.topic, symbols=tuple(sub.symbols),
            interval=sub.interval, dump_scale=sub.dump_scale, binary=sub.binary))
    out = []
    for stream, subs in by_stream.items():
        url = getattr(bybit.urls, stream) or protocol.endpoint(bybit.network, stream)
        groups = ([subs] if stream == "private" else
                  protocol.plan_connections(stream, subs, bybit.max_subscriptions_per_connection))
        for i, group in enumerate(groups):
            settings = bybit_connection.ConnectionSettings(
                name=f"{stream}-{i}{name_suffix}", stream=stream, url=url,
                subscriptions=tuple(group),
                ping_interval=bybit.ping_interval_seconds,
                pong_timeout=bybit.pong_timeout_seconds,
                ack_timeout=bybit.ack_timeout_seconds,
                auth_timeout=bybit.auth_timeout_seconds,
                connect_timeout=bybit.connect_timeout_seconds,
                backoff_max=bybit.reconnect_max_delay_seconds,
                max_symbols_per_request=bybit.max_symbols_per_request,
                api_key=creds.api_key.get() if stream == "private" and creds.api_key else None,
                api_secret=(creds.api_secret.get()
                            if stream == "private" and creds.api_secret else None),
            )
            out.append(bybit_connection.Connection(settings, on_event))
    return out


def _init_metrics(config: Config) -> None:
    subs = config.subscriptions
    metrics.init_reason_children(
        streams={s.stream for s in subs},
        stream_topics={(s.stream, s.topic_id) for s in subs if s.stream != "private"},
        private_connections=["private-0"] if any(s.stream == "private" for s in subs) else [],
        kafka_topics={config.kafka_topic(s) for s in subs} | {config.kafka.dead_letter_topic})
    age_keys: list[tuple[str, str, str]] = []
    for sub in config.subscriptions:
        n = max(1, len(sub.symbols))
        metrics.subscriptions_configured.labels(sub.stream, sub.topic_id).inc(n)
        metrics.subscriptions_active.labels(sub.stream, sub.topic_id)
        metrics.frames_received_total.labels(sub.stream, sub.topic_id)
        metrics.records_produced_total.labels(config.kafka_topic(sub))
        if sub.stream != "private":
            age_keys += [(sub.stream, sub.topic_id, s) for s in sub.symbols]
        else:
            age_keys.append((sub.stream, sub.topic_id, ""))
    metrics.last_message_age.register(age_keys)


class Connector:
    """Everything ``run`` starts, as one object tests can drive in-process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.liveness = Liveness()
        self.sink: KafkaSink | None = None
        self.connections: list[bybit_connection.Connection] = []
        self.health: HealthServer | None = None
        self.coordinator: coordination.Coordinator | None = None
        self._stopped = False

    def start(self) -> Connector:
        _init_metrics(self.config)
        if self.config.metrics.enabled:
            self.health = HealthServer(self.config.metrics.host, self.config.metrics.port,
                                       self.liveness, self.readiness).start()
        if self.config.kafka.create_topics:
            ensure_topics(self.config.kafka, [
                *{self.config.kafka_topic(s) for s in self.config.subscriptions},
                self.config.kafka.dead_letter_topic])
        self.sink = KafkaSink(self.config.kafka)
        routes = build_routes(self.config, serializer_factory(self.config))
        self.pipeline = Pipeline(routes, self.sink)
        # -- scale-out (connector/coordination.py): with `coordination` set, Kafka's
        # consumer group decides which shards this replica streams; the coordinator
        # builds, starts and stops their connections.
        if self.config.coordination is not None:
            self.coordinator = coordination.start(
                self.config, routes, self.sink,
                lambda cfg, suffix: build_connections(cfg, self.pipeline.handle, suffix))
            log.info("started: coordination group %s, %d routes",
                     self.config.coordination.group, len(routes))
            return self
        # -- end scale-out
        self.connections = build_connections(self.config, self.pipeline.handle)
        for conn in self.connections:
            conn.start()
        log.info("started: %d connections, %d routes", len(self.connections), len(routes))
        return self

    def tick(self) -> None:
        """Called by the supervisor loop: liveness holds while every connection
        thread is running, so a dead thread fails /healthz and the pod restarts."""
        dead = [c.name for c in self._connections() if not c.is_alive()]
        if self.coordinator is not None and not self.coordinator.is_alive():
            dead.append("coordinator")
        if dead:
            log.error("connection threads not running: %s", ", ".join(dead))
            return
        self.liveness.tick()

    def _connections(self) -> list[Any]:
        """Connections running now (scale-out: those of the shards this replica owns)."""
        if self.coordinator is not None:
            return list(self.coordinator.runner.connections())
        return list(self.connections)

    def readiness(self) -> dict[str, Any]:
        kafka_ok = self.sink is not None and self.sink.kafka_reachable()
        conns = [{"name": c.name, "up": c.is_up, "subscribed": c.all_subscribed,
                  "last_error": c.last_error} for c in self._connections()]
        ready = kafka_ok and bool(conns) and all(c["up"] and c["subscribed"] for c in conns)
        body: dict[str, Any] = {"ready": ready, "kafka": {"reachable": kafka_ok},
                                "connections": conns}
        if self.coordinator is not None:  # scale-out: ready when our shards stream
            body["coordination"] = self.coordinator.status()
            body["ready"] = kafka_ok and body["coordination"]["ready"]
        if self.sink is not None and self.sink.last_error:
            body["kafka"]["last_error"] = self.sink.last_error
        return body

    def stop(self) -> int:
        """Stop reading, flush Kafka, close. Returns records counted as dropped at close."""
        if self._stopped:
            return 0
        self._stopped = True
        if self.coordinator is not None:  # scale-out: stop shards, flush, leave the group
            self.coordinator.stop()
        log.info("stopping: closing %d connections", len(self.connections))
        threads = [threading.Thread(target=c.stop, name=f"stop-{c.name}")
                   for c in self.connections]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        lost = 0
        if self.sink is not None:
            started = time.monotonic()
            lost = self.sink.close()
            log.info("shutdown: Kafka flushed in %.2f s; records accepted=%d lost=%d",
                     time.monotonic() - started, self.sink.accepted, lost)
        if self.health is not None:
            self.health.stop()
        return lost

    def __enter__(self) -> Connector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(config: Config) -> int:
    """Run until SIGTERM/SIGINT; exit code 0 after a clean flush."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    connector = Connector(config)
    try:
        connector.start()
        while not stop.wait(1.0):
            connector.tick()
    finally:
        connector.stop()
    return 0
