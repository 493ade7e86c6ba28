"""The running connector: builds every stage from the config, starts them in
order, and stops them in the reverse order so nothing accepted is lost.

Start: metrics/health listener → Kafka (retried with backoff until a broker
answers, one log line per attempt naming the bootstrap address, or one line
in all naming the cause when a broker answers but refuses the TLS or SASL
settings; liveness stays 200 and /readyz says why it is 503 meanwhile;
SIGTERM ends the wait at once) → Kafka sink (+ schema registry ids) →
pipeline → WebSocket connections, then the de-duplication memory seeded from
Kafka while they subscribe (their de-duplicated records held meanwhile,
``connector.scaleout.handover``: seeding never delays subscribing).
No WebSocket opens before Kafka answers, so nothing is read that could not
be kept. Stop (SIGTERM/SIGINT): connections first (stop reading), then flush
Kafka within ``kafka.flush_timeout_seconds``, then close the listener.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from prometheus_client import REGISTRY

from connector import records
from connector.archive.writer import Archive, archive_topics
from connector.bybit import connection as bybit_connection
from connector.bybit.legacy import protocol
from connector.bybit.v5 import protocol as v5_protocol
from connector.config.model import Config
from connector.errors import DeliveryError, KafkaAccessError
from connector.ops import metrics, runtime
from connector.ops.health import HealthServer, Liveness
from connector.pipeline.core import Pipeline, build_routes
from connector.scaleout import coordinator as coordination
from connector.scaleout import handover
from connector.serde.registry import SchemaRegistryClient, subject_for
from connector.serde.serializers import (
    ConfluentSerializer,
    PlainAvroSerializer,
    Serializer,
    canonical_schema,
)
from connector.sink.kafka_sink import KafkaSink, ensure_topics

log = logging.getLogger(__name__)

KAFKA_RETRY_FIRST, KAFKA_RETRY_MAX = 1.0, 30.0  # seconds between start-up attempts
KAFKA_PROBE_SECONDS = 1.5  # one attempt's bootstrap wait (bounds the SIGTERM delay)
SEED_SECONDS = 30.0  # reading the de-dup tail at start; records are held meanwhile


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
                plain[kind] = PlainAvroSerializer(records.load_schema(kind),
                                                  records.repeated_fields(kind))
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
        return ConfluentSerializer(schema, schema_id, records.repeated_fields(kind))

    return confluent_for


PRIVATE_STREAMS = ("private", "v5-private")


def stream_url(config: Config, stream: str) -> str:
    """The WebSocket URL a stream connects to: ``bybit.urls`` if set, else the network's."""
    bybit = config.bybit
    configured = bybit.urls.for_stream(stream)
    if configured:
        return configured
    if stream in v5_protocol.ENDPOINTS[bybit.network]:
        return v5_protocol.endpoint(bybit.network, stream)
    return protocol.endpoint(bybit.network, stream)


def plan_groups(stream: str, subs: list[protocol.Subscription],
                cap: int) -> list[list[protocol.Subscription]]:
    """The subscriptions of each connection of one stream: private streams use
    one connection; public ones split by ``cap`` pairs (v5 also by Bybit's
    21,000-character args budget)."""
    if stream in PRIVATE_STREAMS:
        return [subs]
    if stream == "v5":
        return v5_protocol.plan_connections(subs, cap)
    return protocol.plan_connections(stream, subs, cap)


def subscriptions_by_stream(config: Config) -> dict[str, list[protocol.Subscription]]:
    by_stream: dict[str, list[protocol.Subscription]] = {}
    for sub in config.subscriptions:
        by_stream.setdefault(sub.stream, []).append(protocol.Subscription(
            stream=sub.stream, topic=sub.topic, symbols=tuple(sub.symbols),
            interval=None if sub.interval is None else str(sub.interval),
            dump_scale=sub.dump_scale, binary=sub.binary, depth=sub.depth))
    return by_stream


def build_connections(config: Config, on_event: Callable[[Any], None],
                      on_subscribe: Callable[[str, tuple[tuple[str, str], ...]], None]
                      | None = None, name_suffix: str = "") -> list[bybit_connection.Connection]:
    """One connection per stream, more where a stream exceeds the per-connection cap."""
    bybit = config.bybit
    creds = bybit.credentials
    out = []
    for stream, subs in subscriptions_by_stream(config).items():
        url = stream_url(config, stream)
        private = stream in PRIVATE_STREAMS
        groups = plan_groups(stream, subs, bybit.max_subscriptions_per_connection)
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
                max_frame_bytes=bybit.max_frame_bytes,
                api_key=creds.api_key.get() if private and creds.api_key else None,
                api_secret=creds.api_secret.get() if private and creds.api_secret else None,
            )
            out.append(bybit_connection.Connection(settings, on_event,
                                                   on_subscribe=on_subscribe))
    return out


def _init_metrics(config: Config) -> None:
    subs = config.subscriptions
    metrics.init_reason_children(
        streams={s.stream for s in subs},
        stream_topics={(s.stream, s.topic_id) for s in subs if s.stream != "private"},
        private_connections=[f"{p}-0" for p in PRIVATE_STREAMS
                             if any(s.stream == p for s in subs)],
        kafka_topics={config.kafka_topic(s) for s in subs} | {config.kafka.dead_letter_topic})
    age_keys: list[tuple[str, str, str]] = []
    for sub in config.subscriptions:
        n = max(1, len(sub.symbols))
        metrics.subscriptions_configured.labels(sub.stream, sub.topic_id).inc(n)
        metrics.subscriptions_active.labels(sub.stream, sub.topic_id)
        metrics.frames_received_total.labels(sub.stream, sub.topic_id)
        metrics.records_produced_total.labels(config.kafka_topic(sub))
        if sub.stream not in PRIVATE_STREAMS:
            age_keys += [(sub.stream, sub.topic_id, s) for s in sub.symbols]
        else:
            age_keys.append((sub.stream, sub.topic_id, ""))
    metrics.last_message_age.register(age_keys)


_gc_tuned = False


def _tune_gc_once() -> None:
    """``runtime.tune_gc()`` once per process (tests start several connectors)."""
    global _gc_tuned
    if not _gc_tuned:
        _gc_tuned = True
        runtime.tune_gc()


class Connector:
    """Everything ``run`` starts, as one object tests can drive in-process."""

    def __init__(self, config: Config, stop_event: threading.Event | None = None) -> None:
        self.config = config
        self.liveness = Liveness()
        self.sink: KafkaSink | None = None
        self.connections: list[bybit_connection.Connection] = []
        self.health: HealthServer | None = None
        self.stop_event = stop_event or threading.Event()
        self.kafka_attempts = 0
        self.kafka_error: str | None = None
        self.coordinator: coordination.Coordinator | None = None
        self._stopped = False

    def start(self) -> Connector:
        """Start every stage; returns early (nothing opened) if ``stop_event``
        is set while Kafka is still unreachable."""
        _init_metrics(self.config)
        if self.config.metrics.enabled:
            self.health = HealthServer(self.config.metrics.host, self.config.metrics.port,
                                       self.liveness, self.readiness).start()
        topics = [*{self.config.kafka_topic(s) for s in self.config.subscriptions},
                  self.config.kafka.dead_letter_topic, *archive_topics(self.config)]
        self.sink = self._connect_kafka(topics)
        if self.sink is None:
            return self
        serializer_for = serializer_factory(self.config)
        routes = build_routes(self.config, serializer_for)
        archive = (Archive(self.config, serializer_for, self.sink)
                   if archive_topics(self.config) else None)
        self.pipeline = Pipeline(routes, self.sink, archive=archive)
        self.pipeline.resubscribe = self._resubscribe
        self.sink.on_lost = self.pipeline.record_lost  # book records Kafka refused: resync
        # -- scale-out (connector/scaleout/coordinator.py): with `coordination` set, Kafka's
        # consumer group decides which shards this replica streams; the coordinator
        # builds, starts, seeds and stops their connections.
        if self.config.coordination is not None:
            _tune_gc_once()  # start-up heap complete; shards stream once assigned
            pipeline = self.pipeline

            def build(cfg: Config, suffix: str,
                      on_event: Callable[[Any], None] | None = None) -> list[Any]:
                # A standby's connections only keep their frames (on_event given).
                if on_event is not None:
                    return build_connections(cfg, on_event, None, suffix)
                return build_connections(cfg, pipeline.handle, pipeline.expect_snapshot, suffix)

            self.coordinator = coordination.start(self.config, routes, self.sink, build,
                                                  pipeline)
            log.info("started: coordination group %s, %d routes",
                     self.config.coordination.group, len(routes))
            return self
        # -- end scale-out
        self.connections = build_connections(self.config, self.pipeline.handle,
                                             self.pipeline.expect_snapshot)
        _tune_gc_once()  # start-up heap complete; nothing streams yet
        subs = self.config.subscriptions
        handover.hold(routes, subs)
        for conn in self.connections:
            conn.start()
        try:
            handover.seed_trade_dedup(self.config, routes, subs, timeout=SEED_SECONDS)
        finally:
            handover.release(routes, subs)
        log.info("started: %d connections, %d routes", len(self.connections), len(routes))
        return self

    def _resubscribe(self, stream: str, topic_id: str, symbol: str) -> None:
        """Ask the connection that carries (topic_id, symbol) to resubscribe it."""
        for conn in self._connections():
            if conn.settings.stream == stream and conn.owns(topic_id, symbol):
                conn.resubscribe(topic_id, symbol)
                return
        log.warning("no connection carries %s %s %s to resubscribe", stream, topic_id, symbol)

    def _connect_kafka(self, topics: list[str]) -> KafkaSink | None:
        """Retry until a broker answers (backoff, one line per attempt), or stop."""
        kafka = self.config.kafka
        address = ",".join(kafka.bootstrap_servers)
        delay = KAFKA_RETRY_FIRST
        client_log = logging.getLogger("kafka")
        level = client_log.level
        client_log.setLevel(logging.CRITICAL)  # its own lines repeat ours 4 times per attempt
        try:
            while not self.stop_event.is_set():
                self.kafka_attempts += 1
                self.liveness.tick()
                try:
                    ensure_topics(kafka, topics, create=kafka.create_topics,
                                  bootstrap_timeout=KAFKA_PROBE_SECONDS)
                    client_log.setLevel(level)
                    sink = KafkaSink(kafka, warm_topics=topics)
                    self.kafka_error = None
                    if self.kafka_attempts > 1:
                        log.info("Kafka at %s answered (attempt %d)", address,
                                 self.kafka_attempts)
                    return sink
                except KafkaAccessError as exc:
                    # Settings the broker refuses fail the same way on every retry:
                    # one line names the cause; retries stay quiet (and /readyz says it).
                    client_log.setLevel(logging.CRITICAL)
                    repeated = str(exc)[:512] == self.kafka_error
                    self.kafka_error = str(exc)[:512]
                    log.log(logging.DEBUG if repeated else logging.ERROR,
                            "Kafka refuses this client: %s (attempt %d; retrying with "
                            "backoff, at most every %.0f s)", self.kafka_error,
                            self.kafka_attempts, KAFKA_RETRY_MAX)
                except DeliveryError as exc:
                    client_log.setLevel(logging.CRITICAL)
                    self.kafka_error = str(exc)[:512]
                    log.warning("Kafka at %s not reachable (attempt %d: %s); retrying in "
                                "%.0f s", address, self.kafka_attempts, self.kafka_error, delay)
                deadline = time.monotonic() + delay
                while not self.stop_event.wait(max(0.0, min(1.0, deadline - time.monotonic()))):
                    self.liveness.tick()
                    if time.monotonic() >= deadline:
                        break
                delay = min(KAFKA_RETRY_MAX, delay * 2)
            return None
        finally:
            client_log.setLevel(level)

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
        if self.sink is not None:
            kafka = self.sink.status()
        else:
            kafka = {"ready": False, "connected": False,
                     "bootstrap_servers": list(self.config.kafka.bootstrap_servers),
                     "attempts": self.kafka_attempts}
            if self.kafka_error:
                kafka["last_error"] = self.kafka_error
        conns = [{"name": c.name, "url": c.settings.url, "up": c.is_up,
                  "subscribed": c.all_subscribed, "last_error": c.last_error}
                 for c in self._connections()]
        ready = (bool(kafka["ready"]) and bool(conns)
                 and all(c["up"] and c["subscribed"] for c in conns))
        body: dict[str, Any] = {"ready": ready, "kafka": kafka, "connections": conns}
        if self.coordinator is not None:  # scale-out: ready when our shards stream
            body["coordination"] = self.coordinator.status()
            body["ready"] = bool(kafka["ready"]) and body["coordination"]["ready"]
        return body

    def stop(self) -> int:
        """Stop reading, flush Kafka, close. Returns records counted as dropped at close."""
        if self._stopped:
            return 0
        self._stopped = True
        if self.coordinator is not None:  # scale-out: stop shards, flush, leave the group
            self.coordinator.stop()
        if self.connections:  # nothing to announce when start failed before any
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
            dropped = sum(REGISTRY.get_sample_value(f"{metrics.PREFIX}_dropped_records_total",
                                                    {"reason": r}) or 0
                          for r in metrics.DROP_REASONS)
            log.info("shutdown: Kafka flushed in %.2f s; records accepted=%d lost=%d "
                     "dropped=%d (every reason, lost included)",
                     time.monotonic() - started, self.sink.accepted, lost, dropped)
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
    requested: list[float] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        requested.append(time.monotonic())
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    connector = Connector(config, stop)
    try:
        connector.start()
        while not stop.wait(1.0):
            connector.tick()
    finally:
        connector.stop()
        if requested:
            log.info("stopped (%.2f s after the stop request)", time.monotonic() - requested[0])
    return 0
