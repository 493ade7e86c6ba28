"""The Kafka producer wrapper: send, delivery tracking, dead letters,
backpressure, flush. The pipeline never touches producer futures.

Delivery guarantee: at-least-once into Kafka for every record ``send``
accepted (``True``), given the broker comes back within the producer's
``delivery_timeout_ms``; with ``acks=all`` and idempotence (the defaults)
retries do not duplicate. A record Kafka finally refuses is re-sent to the
dead-letter topic with the reason; a record that cannot go anywhere is
counted in ``bybit_connector_dropped_records_total{reason}``, never lost
silently.

Backpressure: at most ``max_pending_records`` records are unacknowledged.
When that bound is reached ``send`` blocks up to ``block_timeout_seconds``
for room; if the buffer stays full past that, ``send`` drops (and counts)
immediately until room frees up, so a long broker outage never stalls the
WebSocket threads for more than one timeout and memory stays bounded.

Thread-safety: ``send`` and ``dead_letter`` may be called from several
threads. Delivery callbacks run on kafka-python's I/O thread; they only
count and latch failures, which are re-routed on the next ``send``/``flush``
on a caller's thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import DefaultPartitioner, murmur2

from connector import metrics
from connector.config import KafkaConfig

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]  # a list: kafka-python takes no other sequence

# Safe defaults; anything under `kafka.producer` overrides them.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": "lz4",
    "linger_ms": 10,
    "batch_size": 256 * 1024,
    "max_block_ms": 10_000,
    "delivery_timeout_ms": 120_000,
    "retry_backoff_ms": 200,
    "reconnect_backoff_max_ms": 5_000,
    "client_id": "bybit-kafka-connector",
}

DETAIL_MAX = 512


class KeyHashPartitioner(Partitioner):
    """Kafka's default keyed partitioning (murmur2, as the Java client), memoised.

    Keys are symbols, a few hundred distinct values, so hashing every record
    with kafka-python's pure-Python murmur2 is wasted work (profiled: ~2.5 µs
    of each send, about a sixth of the client's own cost). The partition
    equals ``DefaultPartitioner``'s for every key; a cached choice is reused
    only while the topic's partition count is unchanged. Records without a key
    (dead letters) go to the default partitioner.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._default = DefaultPartitioner()
        self._max_entries = max_entries
        self._cache: dict[tuple[str, bytes], tuple[int, int]] = {}

    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: bytes | None, cluster: Any) -> int:
        if serialized_key is None:
            return int(self._default.partition(topic, key, serialized_key, value,
                                               serialized_value, cluster))
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        count = len(partitions)
        cached = self._cache.get((topic, serialized_key))
        if cached is not None and cached[0] == count:
            return cached[1]
        chosen: int = sorted(partitions)[(murmur2(serialized_key) & 0x7FFFFFFF) % count]
        if len(self._cache) >= self._max_entries:  # private-stream keys are unbounded
            self._cache.clear()
        self._cache[(topic, serialized_key)] = (count, chosen)
        return chosen


def producer_settings(config: KafkaConfig) -> dict[str, Any]:
    """kafka-python KafkaProducer kwargs from the config (secrets resolved)."""
    settings = dict(PRODUCER_DEFAULTS)
    settings["partitioner"] = KeyHashPartitioner()
    settings.update(config.producer)
    settings["bootstrap_servers"] = list(config.bootstrap_servers)
    sec = config.security
    settings["security_protocol"] = sec.security_protocol
    if sec.sasl_mechanism:
        settings["sasl_mechanism"] = sec.sasl_mechanism
    if sec.sasl_plain_username:
        settings["sasl_plain_username"] = sec.sasl_plain_username
    if sec.sasl_plain_password is not None:
        settings["sasl_plain_password"] = sec.sasl_plain_password.get()
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(sec, name):
            settings[name] = getattr(sec, name)
    if sec.ssl_password is not None:
        settings["ssl_password"] = sec.ssl_password.get()
    if sec.security_protocol in ("SSL", "SASL_SSL"):
        settings["ssl_check_hostname"] = sec.ssl_check_hostname
    return settings


def ensure_topics(config: KafkaConfig, topics: list[str]) -> list[str]:
    """Create the ``topics`` that do not exist yet, with the broker's defaults.

    Best effort: where the connector may not create topics (ACLs), it logs
    and relies on topics provisioned by other means. Returns those created.
    """
    from kafka.admin import KafkaAdminClient, NewTopic

    settings = {k: v for k, v in producer_settings(config).items()
                if k in KafkaAdminClient.DEFAULT_CONFIG}
    try:
        admin = KafkaAdminClient(**settings)
    except KafkaError as exc:
        log.warning("cannot check Kafka topics (%s); relying on existing topics", exc)
        return []
    try:
        missing = sorted(set(topics) - set(admin.list_topics()))
        if missing:
            admin.create_topics([NewTopic(t, -1, -1) for t in missing])
            log.info("created Kafka topics: %s", ", ".join(missing))
        return missing
    except KafkaError as exc:
        log.warning("could not create Kafka topics (%s); relying on existing topics", exc)
        return []
    finally:
        admin.close()


def error_reason(exc: BaseException) -> str:
    """A Kafka error as one of ``metrics.KAFKA_ERROR_REASONS`` (bounded labels)."""
    name = type(exc).__name__
    if "Timeout" in name:
        return "timeout"
    if "TooLarge" in name:
        return "record_too_large"
    if "Authorization" in name or "Authentication" in name:
        return "authorization_failed"
    if "UnknownTopic" in name:
        return "unknown_topic"
    if "Connection" in name or "NotReady" in name or "NotLeader" in name:
        return "network"
    return "other"


@dataclass(frozen=True, slots=True)
class _Failed:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    error: str


class _Delivery:
    """One record in flight; its future calls back one of the two methods.

    Bound methods of one small object instead of two ``functools.partial``
    (kafka-python builds one per callback with arguments): cheaper per record.
    """

    __slots__ = ("dead_letter", "headers", "key", "received_mono_ns", "sink", "topic", "value")

    def __init__(self, sink: KafkaSink, topic: str, key: bytes | None, value: bytes,
                 headers: Headers, received_mono_ns: int, dead_letter: bool) -> None:
        self.sink, self.topic, self.key, self.value = sink, topic, key, value
        self.headers, self.received_mono_ns = headers, received_mono_ns
        self.dead_letter = dead_letter

    def acknowledged(self, _metadata: Any) -> None:
        self.sink._on_ack(self.topic, len(self.value), self.received_mono_ns)

    def failed(self, exc: BaseException) -> None:
        self.sink._release()
        self.sink._on_error(self.topic, self.key, self.value, self.headers, exc,
                            self.dead_letter)


class KafkaSink:
    """Owns the one KafkaProducer of the process (a context manager)."""

    def __init__(self, config: KafkaConfig,
                 producer_factory: Callable[..., Any] = KafkaProducer) -> None:
        self._config = config
        self._dead_letter_topic = config.dead_letter_topic
        self._max_pending = config.max_pending_records
        self._block_timeout = config.block_timeout_seconds
        self._lock = threading.Lock()  # a plain Lock: the per-record fast path stays in C
        self._room = threading.Condition(self._lock)
        self._waiting = 0  # threads blocked on _room (send under backpressure, flush)
        self._pending = 0
        self.accepted = 0  # records send() took (returned True for), dead letters included
        self._full_since: float | None = None
        self._failed: collections.deque[_Failed] = collections.deque()
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        self.last_ack_monotonic: float | None = None
        self.last_error_monotonic: float | None = None
        self.last_error: str | None = None
        metrics.producer_buffer_capacity_records.set(self._max_pending)
        metrics.producer_buffer_records.set_function(lambda: self._pending)
        try:
            self._producer = producer_factory(**producer_settings(config))
        except KafkaError as exc:
            from connector.errors import DeliveryError

            raise DeliveryError(f"cannot start the Kafka producer: {exc}") from exc
        metrics.kafka_record_retries_per_second.set_function(self._retry_rate)

    def _retry_rate(self) -> float:
        """The client's own retry rate, read at scrape time (it keeps no total)."""
        try:
            value = self._producer.metrics().get("producer-metrics", {}).get("record-retry-rate")
        except (KafkaError, AttributeError, RuntimeError):
            return 0.0
        return float(value) if isinstance(value, int | float) else 0.0

    # -- sending --------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
             received_mono_ns: int) -> bool:
        """Hand one record to Kafka. Non-blocking unless the buffer is full.

        Returns False if the record had to be dropped (counted). Delivery is
        observed asynchronously; failures go to the dead-letter topic.
        """
        if self._failed:
            self._reroute_failures()
        if not self._reserve():
            metrics.dropped_records_total.labels("buffer_full").inc()
            return False
        return self._send_reserved(topic, key, value, headers, received_mono_ns, False)

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Write ``value`` to the dead-letter topic with why it is there.

        Headers: ``dlq.reason`` (bounded vocabulary), ``dlq.source`` (the
        Kafka topic it was meant for, or ``stream:<name>`` for frames),
        ``dlq.detail`` (text, truncated), then ``extra_headers``.
        """
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.source", source.encode()),
            ("dlq.detail", detail[:DETAIL_MAX].encode("utf-8", "replace")),
            *extra_headers,
        ]
        if not self._reserve():
            metrics.dropped_records_total.labels("dead_letter_failed").inc()
            return
        metrics.dead_letter_records_total.labels(reason).inc()
        self._send_reserved(self._dead_letter_topic, None, value, headers,
                            time.monotonic_ns(), True)

    def _send_reserved(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
                       received_mono_ns: int, is_dead_letter: bool) -> bool:
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except (KafkaError, ValueError, TypeError, AssertionError) as exc:
            # Raised before queuing: metadata timeout, record too large, closed producer.
            self._release()
            self._on_error(topic, key, value, headers, exc, is_dead_letter)
            return not is_dead_letter
        delivery = _Delivery(self, topic, key, value, headers, received_mono_ns, is_dead_letter)
        future.add_callback(delivery.acknowledged)
        future.add_errback(delivery.failed)
        return True

    def _reserve(self) -> bool:
        """Take one slot of the pending bound, waiting per the backpressure policy."""
        with self._lock:
            if self._pending < self._max_pending:
                self._pending += 1
                self.accepted += 1
                return True
            now = time.monotonic()
            if self._full_since is None:
                self._full_since = now
            deadline = self._full_since + self._block_timeout
            self._waiting += 1
            try:
                while self._pending >= self._max_pending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._room.wait(remaining)
            finally:
                self._waiting -= 1
            self._pending += 1
            self.accepted += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._full_since is not None and self._pending < self._max_pending:
                self._full_since = None
            if self._waiting:  # only a blocked send() or a flush() needs waking
                self._room.notify_all()

    # -- delivery callbacks (kafka-python I/O thread) ---------------------------

    def _on_ack(self, topic: str, size: int, received_mono_ns: int) -> None:
        self._release()
        now = time.monotonic_ns()
        self.last_ack_monotonic = now / 1e9
        children = self._children.get(topic)
        if children is None:
            children = (metrics.records_produced_total.labels(topic),
                        metrics.produced_bytes_total.labels(topic),
                        metrics.delivery_latency_seconds.labels(topic))
            self._children[topic] = children
        children[0].inc()
        children[1].inc(size)
        children[2].observe((now - received_mono_ns) / 1e9)

    def _on_error(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
                  exc: BaseException, is_dead_letter: bool) -> None:
        reason = type(exc).__name__
        metrics.kafka_send_errors_total.labels(topic, error_reason(exc)).inc()
        self.last_error_monotonic = time.monotonic()
        self.last_error = f"{reason}: {exc}"
        if is_dead_letter:
            log.error("dead-letter write to %s failed (%s); record dropped", topic, reason)
            metrics.dropped_records_total.labels("dead_letter_failed").inc()
            return
        log.warning("Kafka refused a record for %s: %s; sending it to %s", topic, exc,
                    self._dead_letter_topic)
        self._failed.append(_Failed(topic, key, value, headers, f"{reason}: {exc}"))

    def _reroute_failures(self) -> None:
        while True:
            try:
                failed = self._failed.popleft()
            except IndexError:
                return
            extra = [h for h in failed.headers if not h[0].startswith("dlq.")]
            if failed.key is not None:
                extra.append(("dlq.key", failed.key))
            self.dead_letter(failed.value, "delivery_failed", failed.topic, failed.error, extra)

    # -- lifecycle --------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    def kafka_reachable(self) -> bool:
        """For /readyz: connected at bootstrap and no delivery error lately."""
        now = time.monotonic()
        if self.last_error_monotonic is not None and now - self.last_error_monotonic < 10:
            last_ack = self.last_ack_monotonic
            if last_ack is None or last_ack < self.last_error_monotonic:
                return False
        if self.last_ack_monotonic is not None and now - self.last_ack_monotonic < 60:
            return True
        try:
            return bool(self._producer.bootstrap_connected())
        except (KafkaError, AttributeError):
            return False

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for every pending record (and re-routed
        failures). Returns how many are still unacknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                self._producer.flush(timeout=remaining)
            except KafkaError as exc:
                log.warning("flush did not complete: %s", exc)
            if self._failed and time.monotonic() < deadline:
                self._reroute_failures()
                continue
            with self._lock:
                if self._pending == 0 or time.monotonic() >= deadline:
                    return self._pending
                self._waiting += 1
                try:
                    self._room.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                finally:
                    self._waiting -= 1

    def close(self, timeout: float | None = None) -> int:
        """Flush (bounded), close the producer; count what could not be delivered.

        Returns the number of records counted as dropped (reason
        ``shutdown_timeout``): still unacknowledged, or refused and not yet
        re-routed, when the flush timeout ran out.
        """
        timeout = self._config.flush_timeout_seconds if timeout is None else timeout
        left = self.flush(timeout)
        try:
            self._producer.close(timeout=1.0 if left else timeout)
        except KafkaError as exc:
            log.warning("closing the producer: %s", exc)
        lost = self._pending + len(self._failed)
        if lost:
            log.error("%d records were not acknowledged within %.1f s; counted as dropped",
                      lost, timeout)
            metrics.dropped_records_total.labels("shutdown_timeout").inc(lost)
        return lost

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
