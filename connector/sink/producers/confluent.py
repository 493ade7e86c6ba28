"""The confluent-kafka (librdkafka) backend of the ``Producer`` interface.

librdkafka does the batching, compression and network I/O in its own C
threads; Python pays only for ``produce()`` (~2.7 µs a record with key,
headers and a delivery callback, against ~15 µs in kafka-python's ``send``)
and for the delivery callbacks. Those are served by ``poll()``: this
backend runs one thread, ``delivery``, that does nothing else, so callbacks
arrive on one thread as with kafka-python's I/O thread.

Health comes from librdkafka's statistics (every ``statistics.interval.ms``,
parsed on the delivery thread) and its error callback; ``bootstrap_connected``
never blocks more than 0.5 s (one metadata request, only before the first
statistics arrive).

Needs the optional extra: ``pip install 'bybit-kafka-connector[confluent]'``.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from typing import Any

from connector.config.kafka_keys import LIBRDKAFKA_KEYS
from connector.errors import ConfigError, DeliveryError
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
from connector.sink.producers.settings import librdkafka_settings

confluent_kafka: Any
try:
    import confluent_kafka
except ImportError:  # pragma: no cover - the extra is installed in tests
    confluent_kafka = None

__all__ = ["LIBRDKAFKA_KEYS", "ConfluentProducer", "producer_settings"]

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger("connector.sink.producers.librdkafka")


def producer_settings(config: Any) -> dict[str, Any]:
    """confluent_kafka.Producer settings from a ``KafkaConfig`` (see ``settings.py``)."""
    return librdkafka_settings(config, QUEUE_HEADROOM)


def _error(err: Any, closed: bool = False) -> ProduceError:
    """A librdkafka ``KafkaError`` as our ``ProduceError``."""
    code = str(err.name())
    if closed or code in ("_PURGE_QUEUE", "_PURGE_INFLIGHT"):
        return ProduceError(f"producer closed before delivery ({code})", reason="timeout",
                            code="closed")
    return ProduceError(f"{code}: {err.str()}", reason=reason_of(code), code=code,
                        retriable=bool(err.retriable()), fatal=bool(err.fatal()))


def _delivered(on_ack: AckCallback, on_error: ErrorCallback, err: Any, msg: Any) -> None:
    if err is None:
        on_ack(msg.partition(), msg.offset())
    else:
        on_error(_error(err))


class ConfluentProducer:
    """One ``confluent_kafka.Producer`` and its delivery thread (a context manager)."""

    client: Client = "confluent-kafka"

    def __init__(self, config: Any, settings: dict[str, Any] | None = None,
                 delivery_thread: bool = True) -> None:
        """``settings`` replaces ``producer_settings(config)`` (benchmarks, tests);
        ``delivery_thread=False`` leaves serving callbacks to the caller's ``poll``."""
        if confluent_kafka is None:
            raise ConfigError("kafka.client", "confluent-kafka is not installed",
                              "pip install 'bybit-kafka-connector[confluent]'")
        conf = dict(producer_settings(config) if settings is None else settings)
        self._stats_interval = float(conf.get("statistics.interval.ms", 0)) / 1000
        conf.update(error_cb=self._on_client_error, logger=librdkafka_log)
        if self._stats_interval > 0:
            conf["stats_cb"] = self._on_stats
        try:
            self._producer = confluent_kafka.Producer(conf)
        except confluent_kafka.KafkaException as exc:
            raise DeliveryError(f"cannot start the Kafka producer: {exc.args[0].str()}") from exc
        self._produce: Any = self._producer.produce
        self._closed = False
        self._fatal: str | None = None
        self._brokers_up: bool | None = None  # from the latest statistics
        self._stats_at = 0.0
        self._all_down_at = 0.0
        self._probe: tuple[float, bool] = (0.0, False)
        self._retries: tuple[float, int] | None = None  # (ts, txretries) of the last statistics
        self._retry_rate = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if delivery_thread:
            # A daemon: it holds no data (librdkafka does, and close() flushes it), and a
            # producer left unclosed after a failed start must not keep the process alive.
            self._thread = threading.Thread(target=self._serve, name="delivery", daemon=True)
            self._thread.start()

    # -- sending ----------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
             on_ack: AckCallback, on_error: ErrorCallback) -> None:
        if self._closed:
            raise ProduceError("the producer is closed", code="closed")
        try:
            # Positional (topic, value, key, partition, callback, on_delivery, timestamp,
            # headers): cheaper to parse than keywords; -1 and 0 are "unassigned"/"now".
            self._produce(topic, value, key, -1,
                          functools.partial(_delivered, on_ack, on_error), None, 0, headers)
        except BufferError as exc:
            raise QueueFull(f"librdkafka's queue is full ({exc})") from exc
        except confluent_kafka.KafkaException as exc:
            raise _error(exc.args[0]) from exc
        except (TypeError, ValueError) as exc:  # a bad argument: a bug upstream, say which
            raise ProduceError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__) from exc

    # -- delivery ---------------------------------------------------------------

    def poll(self, timeout: float) -> int:
        return int(self._producer.poll(timeout))

    def _serve(self) -> None:
        """The delivery thread: serve callbacks until ``close``."""
        while not self._stop.is_set():
            try:
                self._producer.poll(0.1)
            except Exception:  # a raising callback must not stop deliveries
                log.exception("a delivery callback raised")

    def _on_client_error(self, err: Any) -> None:
        """librdkafka's global errors (connection loss, fatal idempotence errors)."""
        code = err.name()
        if err.fatal():
            self._fatal = f"{code}: {err.str()}"
            log.error("the Kafka producer hit a fatal error: %s", self._fatal)
        elif code == "_ALL_BROKERS_DOWN":
            self._all_down_at = time.monotonic()
            log.warning("all Kafka brokers are down")
        else:
            log.debug("Kafka client error: %s: %s", code, err.str())

    def _on_stats(self, text: str) -> None:
        stats = json.loads(text)
        brokers = stats.get("brokers", {}).values()
        self._brokers_up = any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0
                               for b in brokers)
        now = time.monotonic()
        self._stats_at = now
        retries = sum(int(b.get("txretries", 0)) for b in brokers)
        if self._retries is not None and now > self._retries[0]:
            self._retry_rate = max(0, retries - self._retries[1]) / (now - self._retries[0])
        self._retries = (now, retries)

    # -- health -----------------------------------------------------------------

    @property
    def fatal_error(self) -> str | None:
        return self._fatal

    def warm(self, topic: str) -> None:
        """Nothing to do: librdkafka never blocks ``produce`` on metadata (it
        fetches it in the background and queues the record meanwhile)."""

    def bootstrap_connected(self) -> bool:
        if self._closed or self._fatal is not None:
            return False
        now = time.monotonic()
        fresh = self._stats_at and now - self._stats_at < 3 * self._stats_interval
        if fresh and self._all_down_at < self._stats_at:
            return bool(self._brokers_up)
        if self._all_down_at and now - self._all_down_at < 1.0:
            return False
        checked, ok = self._probe  # no statistics yet (or stale): ask once a second at most
        if now - checked >= 1.0:
            try:
                ok = bool(self._producer.list_topics(timeout=0.5).brokers)
            except confluent_kafka.KafkaException:
                ok = False
            self._probe = (now, ok)
        return ok

    def retries_per_second(self) -> float:
        return self._retry_rate

    # -- lifecycle --------------------------------------------------------------

    def flush(self, timeout: float) -> int:
        if self._closed:
            return 0
        if self._thread is None:
            return int(self._producer.flush(max(0.0, timeout)))
        # Wait for the delivery thread instead of librdkafka's flush(), which would
        # serve callbacks on this thread too (callbacks stay on one thread).
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = len(self._producer)
            remaining = deadline - time.monotonic()
            if not left or remaining <= 0:
                return left
            time.sleep(min(0.005, remaining))

    def close(self, timeout: float) -> int:
        if self._closed:
            return 0
        left = self.flush(timeout)
        if left:
            # Fail what is left so every callback still fires once (code "closed").
            self._producer.purge(True, True, False)
            self.flush(2.0)
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.13
        if close is not None:
            close()
        return left

    def __len__(self) -> int:
        """Records queued or in flight (their callbacks not yet served)."""
        return len(self._producer)

    def __enter__(self) -> ConfluentProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(5.0)
