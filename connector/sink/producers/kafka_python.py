"""The kafka-python backend of the ``Producer`` interface (the default client).

kafka-python batches, compresses and talks to the brokers on its own I/O
thread, where it also resolves each record's future: the callbacks run
there. It keeps no bound of its own on queued records (3.x has no buffer
memory limit), so this backend counts what it has queued and refuses a
record past ``max_pending_records`` + headroom with ``QueueFull``, like
librdkafka's queue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from connector.errors import DeliveryError
from connector.sink.admin import (  # noqa: F401 (re-exported)
    PRODUCER_DEFAULTS,
    KeyHashPartitioner,
    producer_settings,
)
from connector.sink.producers import (
    QUEUE_HEADROOM,
    AckCallback,
    Client,
    ErrorCallback,
    Headers,
    ProduceError,
    QueueFull,
    reason_of,
)

log = logging.getLogger(__name__)

def _error(exc: BaseException, closed: bool = False) -> ProduceError:
    name = type(exc).__name__
    if closed:
        return ProduceError(f"producer closed before delivery ({name})", reason="timeout",
                            code="closed")
    return ProduceError(f"{name}: {exc}", reason=reason_of(name), code=name,
                        retriable=bool(getattr(exc, "retriable", False)))


class KafkaPythonProducer:
    """One ``kafka.KafkaProducer`` (a context manager)."""

    client: Client = "kafka-python"

    def __init__(self, config: Any, settings: dict[str, Any] | None = None,
                 max_queued: int | None = None) -> None:
        """``settings`` replaces ``producer_settings(config)``; ``max_queued`` the
        local bound (default ``max_pending_records`` + headroom)."""
        self._max_queued = (config.max_pending_records + QUEUE_HEADROOM
                            if max_queued is None else max_queued)
        self._lock = threading.Lock()
        self._queued = 0
        self._closing = False
        self._closed = False
        try:
            self._producer = KafkaProducer(
                **(producer_settings(config) if settings is None else settings))
        except KafkaError as exc:
            raise DeliveryError(f"cannot start the Kafka producer: {exc}") from exc

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
             on_ack: AckCallback, on_error: ErrorCallback) -> None:
        with self._lock:
            if self._queued >= self._max_queued:
                raise QueueFull(f"{self._queued} records queued in kafka-python")
            self._queued += 1
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except (KafkaError, ValueError, TypeError, AssertionError) as exc:
            # Refused before queuing: metadata timeout, record too large, closed producer.
            self._done()
            raise _error(exc, self._closed) from exc
        future.add_callback(self._acked, on_ack)
        future.add_errback(self._failed, on_error)

    def _acked(self, on_ack: AckCallback, metadata: Any) -> None:
        try:
            on_ack(metadata.partition, metadata.offset)
        finally:
            self._done()

    def _failed(self, on_error: ErrorCallback, exc: BaseException) -> None:
        try:
            on_error(_error(exc, self._closing))
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._queued -= 1

    def poll(self, timeout: float) -> int:
        """Nothing to serve: callbacks run on kafka-python's I/O thread."""
        return 0

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._closed:
            try:
                self._producer.flush(timeout=max(0.0, timeout))
            except KafkaTimeoutError:
                pass
            except KafkaError as exc:
                log.warning("flush did not complete: %s", exc)
        # Futures are resolved a moment before their callbacks have run.
        while self._queued and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._queued

    def close(self, timeout: float) -> int:
        if self._closed:
            return 0
        left = self.flush(timeout)
        self._closing = True  # what fails from here failed because we close
        if left:
            # KafkaProducer.close() first waits in flush() and raises when that times
            # out, leaving its I/O thread running: stop the sender first, which fails
            # the batches still queued (their errbacks fire, code "closed").
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()
        try:
            self._producer.close(timeout=1.0)
        except KafkaError as exc:
            log.warning("closing the producer: %s", exc)
        self._closed = True
        deadline = time.monotonic() + 1.0
        while self._queued and time.monotonic() < deadline:
            time.sleep(0.005)
        return left

    def bootstrap_connected(self) -> bool:
        if self._closed:
            return False
        # kafka-python 3's own bootstrap_connected() is true only while it is still
        # bootstrapping, so ask its network client about the known brokers instead.
        try:
            client = self._producer._sender._client
            return any(client.connected(broker.node_id)
                       for broker in self._producer._metadata.brokers())
        except AttributeError:  # another kafka-python layout
            try:
                return bool(self._producer.bootstrap_connected())
            except (KafkaError, AttributeError):
                return False
        except KafkaError:
            return False

    def retries_per_second(self) -> float:
        try:
            value = self._producer.metrics().get("producer-metrics", {}).get("record-retry-rate")
        except (KafkaError, AttributeError, RuntimeError):
            return 0.0
        return float(value) if isinstance(value, int | float) else 0.0

    def warm(self, topic: str) -> None:
        """Fetch ``topic``'s metadata now: a send to a topic of unknown metadata
        blocks up to ``max_block_ms``."""
        try:
            self._producer.partitions_for(topic)
        except (KafkaError, AttributeError) as exc:
            log.warning("no metadata for Kafka topic %s yet (%s)", topic, exc)

    @property
    def fatal_error(self) -> str | None:
        """kafka-python 3.0's dead end: idempotent, READY, and no producer id
        (after a retried batch expires, ``reset_producer_id`` leaves it so and
        the sender never asks for a new one). Also seen for a moment while a
        producer id is being fetched: callers confirm it over a few checks."""
        tm = getattr(self._producer, "_transaction_manager", None)
        if tm is None or self._closed:
            return None
        try:
            from kafka.producer.transaction_manager import TransactionState

            wedged = bool(not tm.is_transactional() and not tm.has_producer_id()
                          and tm._current_state == TransactionState.READY)
        except (AttributeError, ImportError):
            return None
        return "it lost its producer id and will not ask for a new one" if wedged else None

    def __len__(self) -> int:
        return self._queued

    def __enter__(self) -> KafkaPythonProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(5.0)
