"""The Kafka producer wrapper: send, delivery tracking, dead letters,
backpressure, flush. The pipeline never touches producer futures.

Delivery guarantee: every record ``send`` accepted (``True``) reaches its
topic once the broker comes back, however long the outage: by default the
producer has no delivery deadline (as Kafka Connect's source workers), so only
``max_pending_records`` bounds what waits. With ``acks=all`` and idempotence
(the defaults) retries neither duplicate nor reorder. With a deadline
configured, a record older than it is refused. A record Kafka finally refuses is re-sent to the
dead-letter topic with the reason; a record that cannot go anywhere is
counted in ``bybit_connector_dropped_records_total{reason}``, never lost
silently.

Backpressure: at most ``max_pending_records`` records are unacknowledged.
When that bound is reached ``send`` blocks up to ``block_timeout_seconds``
for room; if the buffer stays full past that, ``send`` drops (and counts)
immediately until room frees up, so a long broker outage never stalls the
WebSocket threads for more than one timeout and memory stays bounded.

Outages: a record Kafka refuses keeps its slot of the bound until it is
dead-lettered (or counted), so memory stays bounded in any outage. Refused
records are re-routed by the sink's own watchdog thread, never on a
connection thread, and logged as one summary line per topic and reason every
few seconds. The watchdog also replaces a producer that stops making progress
while a broker is connected (kafka-python 3.0's idempotent producer wedges for
good after a batch that was already retried expires: ``reset_producer_id``
leaves it READY without a producer id, and the sender never asks for a new
one); what the old producer still held is re-sent by the new one, what was
acknowledged is not (``bybit_connector_producer_restarts_total``).

Clients: the sink talks to Kafka only through ``connector.sink.producers``'
``Producer`` interface, so the bound, accounting, dead letters, metrics,
watchdog and replacement are one code path for both ``kafka.client``
backends (kafka-python, confluent-kafka/librdkafka). A backend's
``fatal_error`` (librdkafka's fatal idempotence errors, kafka-python's lost
producer id) and a stall both lead to a replacement.

Lost records: a record sent with a ``ref`` that Kafka refuses (dead-lettered
as ``delivery_failed``), or that a replaced producer hands back and no room
is left for, is reported once to ``on_lost(ref, reason)`` on the watchdog
thread (``delivery_failed`` or ``dropped``): the pipeline breaks that book's
chain. The listener must only queue: it runs off the pipeline's threads.

Thread-safety: ``send`` and ``dead_letter`` may be called from several
threads. Delivery callbacks run on the backend's delivery thread; they only
count and queue failures for the watchdog.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from connector.config.model import KafkaConfig
from connector.errors import ConnectorError
from connector.ops import metrics
from connector.sink.admin import (  # noqa: F401 (re-exported: the sink's public API)
    PRODUCER_DEFAULTS,
    KeyHashPartitioner,
    ensure_topics,
    error_reason,
    producer_settings,
    tcp_probe,
)
from connector.sink.producers import ProduceError, Producer, QueueFull, create_producer

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]  # a list: kafka-python takes no other sequence
ProducerFactory = Callable[[KafkaConfig], Producer]
LostListener = Callable[[object, str], None]  # (ref given to send, reason)

DETAIL_MAX = 512
STALL_SECONDS = 15.0  # no acknowledgement for this long, with work and a broker: replace
SUMMARY_SECONDS = 5.0  # at most one summary line per topic and reason this often
FLUSH_GIVE_UP_SECONDS = 1.0  # flush stops early once no broker even accepts TCP this long


class _Delivery:
    """One record in flight; the backend calls back exactly one of the two methods.

    Bound methods of one small object instead of two ``functools.partial``:
    cheaper per record.
    The record keeps its slot of the pending bound until it is acknowledged,
    dead-lettered or counted as dropped.
    """

    __slots__ = ("dead_letter", "error", "generation", "headers", "key", "received_mono_ns",
                 "ref", "sink", "topic", "value")

    def __init__(self, sink: KafkaSink, topic: str, key: bytes | None, value: bytes,
                 headers: Headers, received_mono_ns: int, dead_letter: bool,
                 generation: int, ref: object = None) -> None:
        self.sink, self.topic, self.key, self.value = sink, topic, key, value
        self.headers, self.received_mono_ns = headers, received_mono_ns
        self.dead_letter, self.generation = dead_letter, generation
        self.ref = ref  # the sender's handle, reported to ``on_lost`` if the record is lost
        self.error = ""

    def acknowledged(self, _partition: int, _offset: int) -> None:
        self.sink._on_ack(self.topic, len(self.value), self.received_mono_ns)

    def failed(self, exc: ProduceError) -> None:
        self.sink._on_error(self, exc)


def _default_factory(config: KafkaConfig) -> Producer:
    return create_producer(config.client, config)


class KafkaSink:
    """Owns the Kafka producer of the process (a context manager)."""

    def __init__(self, config: KafkaConfig,
                 producer_factory: ProducerFactory = _default_factory,
                 stall_seconds: float = STALL_SECONDS, warm_topics: Sequence[str] = ()) -> None:
        self._config = config
        self._factory = producer_factory
        self._stall_seconds = stall_seconds
        self._dead_letter_topic = config.dead_letter_topic
        self._max_pending = config.max_pending_records
        self._block_timeout = config.block_timeout_seconds
        self._lock = threading.Lock()  # a plain Lock: the per-record fast path stays in C
        self._room = threading.Condition(self._lock)
        self._waiting = 0  # threads blocked on _room (send under backpressure, flush)
        self._pending = 0
        self.accepted = 0  # records send() took (returned True for), dead letters included
        self._full_since: float | None = None
        self._failed: collections.deque[_Delivery] = collections.deque()  # to dead-letter
        self._resend: collections.deque[_Delivery] = collections.deque()  # from a replaced producer
        # (topic, thread id) -> metric children: fastmetrics children belong to one thread,
        # and a replaced producer delivers on a new one.
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        self._topics: set[str] = set(warm_topics)
        self._summary: collections.Counter[tuple[str, str]] = collections.Counter()
        self._summary_error: dict[tuple[str, str], str] = {}
        self._summary_at = time.monotonic()
        self.last_ack_monotonic: float | None = None
        self.last_error_monotonic: float | None = None
        self.last_error: str | None = None
        self.restarts = 0
        self._generation = 0
        self._connected_since: float | None = None
        self._replaced_at = time.monotonic()
        self._wedge_ticks = 0
        self._closed = False
        self.on_lost: LostListener | None = None  # see the module doc
        metrics.producer_buffer_capacity_records.set(self._max_pending)
        metrics.producer_buffer_records.set_function(lambda: self._pending)
        self._producer = self._new_producer()
        metrics.kafka_record_retries_per_second.set_function(self._retry_rate)
        for topic in {*warm_topics, self._dead_letter_topic}:
            self._warm(topic)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="kafka-watchdog", daemon=True)
        self._watchdog.start()

    def _new_producer(self) -> Producer:
        """A new backend (``DeliveryError`` if it cannot start)."""
        return self._factory(self._config)

    def _warm(self, topic: str) -> None:
        """Fetch ``topic``'s metadata now, so no later send waits for it."""
        self._producer.warm(topic)

    def _retry_rate(self) -> float:
        """The client's own retry rate, read at scrape time (it keeps no total)."""
        return self._producer.retries_per_second()

    # -- sending --------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
             received_mono_ns: int, ref: object = None) -> bool:
        """Hand one record to Kafka. Non-blocking unless the buffer is full.

        Returns False if the record had to be dropped (counted). Delivery is
        observed asynchronously; failures go to the dead-letter topic and,
        for a record with a ``ref``, to ``on_lost``.
        """
        if not self._reserve():
            metrics.dropped_records_total.labels("buffer_full").inc()
            return False
        return self._send_reserved(_Delivery(self, topic, key, value, headers, received_mono_ns,
                                             False, self._generation, ref))

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """Write ``value`` to the dead-letter topic with why it is there.

        Headers: ``dlq.reason`` (bounded vocabulary), ``dlq.source`` (the
        Kafka topic it was meant for, or ``stream:<name>`` for frames),
        ``dlq.detail`` (text, truncated), then ``extra_headers``.
        """
        if not self._reserve():
            metrics.dropped_records_total.labels("dead_letter_failed").inc()
            return
        self._dead_letter_reserved(value, reason, source, detail, extra_headers,
                                   time.monotonic_ns())

    def _dead_letter_reserved(self, value: bytes, reason: str, source: str, detail: str,
                              extra_headers: Sequence[tuple[str, bytes]],
                              received_mono_ns: int) -> None:
        headers = [
            ("dlq.reason", reason.encode()),
            ("dlq.source", source.encode()),
            ("dlq.detail", detail[:DETAIL_MAX].encode("utf-8", "replace")),
            *extra_headers,
        ]
        metrics.dead_letter_records_total.labels(reason).inc()
        self._send_reserved(_Delivery(self, self._dead_letter_topic, None, value, headers,
                                      received_mono_ns, True, self._generation))

    def _send_reserved(self, delivery: _Delivery) -> bool:
        d = delivery
        producer, d.generation = self._producer, self._generation
        try:
            producer.send(d.topic, d.key, d.value, d.headers, d.acknowledged, d.failed)
        except QueueFull:
            # The client's own queue is full (it holds a little more than our bound, so
            # only records a replaced producer handed back can meet it): count, never wait.
            self._release()
            metrics.dropped_records_total.labels(
                "dead_letter_failed" if d.dead_letter else "buffer_full").inc()
            return False
        except ProduceError as exc:
            # Refused before queuing: metadata timeout, record too large, closed producer.
            self._on_error(d, exc)
            return not d.dead_letter
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
        key = (topic, threading.get_ident())
        children = self._children.get(key)
        if children is None:
            children = (metrics.records_produced_total.labels(topic),
                        metrics.produced_bytes_total.labels(topic),
                        metrics.delivery_latency_seconds.labels(topic))
            self._children[key] = children
            self._topics.add(topic)
        children[0].inc()
        children[1].inc(size)
        children[2].observe((now - received_mono_ns) / 1e9)

    def _on_error(self, d: _Delivery, exc: ProduceError) -> None:
        if self._closed:
            return  # close() counts whatever is still pending
        if d.generation != self._generation:
            self._resend.append(d)  # handed back by a replaced producer: send again
            self._wake.set()
            return
        if exc.fatal:
            self._wake.set()  # the watchdog replaces the producer
        metrics.kafka_send_errors_total.labels(d.topic, exc.reason).inc()
        text, name = str(exc), exc.code or type(exc).__name__
        d.error = text if text.startswith(name) else f"{name}: {text}"
        self.last_error_monotonic = time.monotonic()
        self.last_error = d.error[:DETAIL_MAX]
        if d.dead_letter:
            self._note(d.topic, "dead-letter write failed, dropped", d.error)
            metrics.dropped_records_total.labels("dead_letter_failed").inc()
            self._release()
            return
        self._note(d.topic, f"refused, sent to {self._dead_letter_topic}", d.error)
        self._failed.append(d)
        self._wake.set()

    def _note(self, topic: str, what: str, error: str) -> None:
        key = (topic, what)
        self._summary[key] += 1
        self._summary_error[key] = error

    # -- the watchdog thread --------------------------------------------------------

    def _watch(self) -> None:
        """Dead-letters refused records, re-sends what a replaced producer gave
        back, replaces a stalled producer and logs summaries, off the hot path."""
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._drain()
                self._check_progress(time.monotonic())
                self._log_summary(time.monotonic())
            except Exception:  # the watchdog must outlive any one failure
                log.exception("Kafka watchdog iteration failed")

    def _drain(self) -> None:
        while self._resend and not self._stop.is_set():
            d = self._resend.popleft()
            if not self._send_reserved(d) and not d.dead_letter:
                self._lost(d, "dropped")  # no room in the new producer: counted as dropped
        while self._failed and not self._stop.is_set():
            d = self._failed.popleft()
            self._lost(d, "delivery_failed")
            extra = [h for h in d.headers if not h[0].startswith("dlq.")]
            if d.key is not None:
                extra.append(("dlq.key", d.key))
            self._dead_letter_reserved(d.value, "delivery_failed", d.topic, d.error, extra,
                                       d.received_mono_ns)

    def _lost(self, d: _Delivery, reason: str) -> None:
        listener = self.on_lost
        if d.ref is None or listener is None:
            return
        try:
            listener(d.ref, reason)
        except Exception:  # the listener's failure must not stop the dead-lettering
            log.exception("on_lost listener failed")

    def broker_connected(self) -> bool:
        """Whether the producer's client holds a live connection to any broker."""
        return self._producer.bootstrap_connected()

    def _known_wedge(self) -> bool:
        """The backend says it is unusable (see ``Producer.fatal_error``)."""
        return self._producer.fatal_error is not None

    def _stalled_for(self, now: float) -> float:
        """Seconds the producer has had work and a broker but acknowledged nothing."""
        if self._connected_since is None or self._pending == 0:
            return 0.0
        since = max(self.last_ack_monotonic or 0.0, self._connected_since, self._replaced_at)
        return max(0.0, now - since)

    def _check_progress(self, now: float) -> None:
        if not self.broker_connected():
            self._connected_since = None
            self._wedge_ticks = 0
            return
        if self._connected_since is None:
            self._connected_since = now
        self._wedge_ticks = self._wedge_ticks + 1 if self._known_wedge() else 0
        stalled = self._stalled_for(now)
        if self._wedge_ticks >= 3:
            self._replace(self._producer.fatal_error or "it reported a fatal error")
        elif stalled >= self._stall_seconds:
            self._replace(f"nothing acknowledged for {stalled:.0f} s with a broker connected")

    def _replace(self, why: str) -> None:
        """Swap in a new producer; the old one's unacknowledged records come back
        through their errbacks (old generation) and are sent again."""
        try:
            new = self._new_producer()
        except ConnectorError as exc:
            log.error("Kafka producer stalled (%s) and a new one failed to start: %s", why, exc)
            return
        old = self._producer
        with self._lock:
            self._producer = new
            self._generation += 1
        self.restarts += 1
        self._replaced_at = time.monotonic()
        self._wedge_ticks = 0
        metrics.producer_restarts_total.inc()
        log.error("Kafka producer stalled (%s); replaced it (restart %d), re-sending %d "
                  "unacknowledged records", why, self.restarts, self._pending)
        for topic in sorted({*self._topics, self._dead_letter_topic}):
            self._warm(topic)
        # close(0) fails every record the old one still holds (code "closed"); their
        # callbacks (old generation) queue them for re-sending by the new one.
        old.close(0)

    def _log_summary(self, now: float) -> None:
        if not self._summary or now - self._summary_at < SUMMARY_SECONDS:
            return
        window = now - self._summary_at
        self._summary_at = now
        summary, self._summary = self._summary, collections.Counter()
        for (topic, what), count in sorted(summary.items()):
            log.warning("%d records for %s %s in the last %.0f s (last error: %s)", count, topic,
                        what, window, self._summary_error.get((topic, what), "?"))

    # -- lifecycle --------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    def status(self) -> dict[str, Any]:
        """Kafka's part of /readyz: ready while a broker connection is live and
        the producer is not stalled (work waiting, nothing acknowledged)."""
        now = time.monotonic()
        connected = self.broker_connected()
        stalled = self._stalled_for(now) >= self._stall_seconds or self._wedge_ticks > 0
        body: dict[str, Any] = {
            "ready": connected and not stalled, "connected": connected, "stalled": stalled,
            "bootstrap_servers": list(self._config.bootstrap_servers),
            "pending_records": self._pending, "producer_restarts": self.restarts}
        if self.last_ack_monotonic is not None:
            body["seconds_since_last_ack"] = round(now - self.last_ack_monotonic, 1)
        if self.last_error:
            body["last_error"] = self.last_error
        return body

    def kafka_reachable(self) -> bool:
        """For /readyz: see ``status``."""
        return bool(self.status()["ready"])

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for every pending record (refused ones
        included: the watchdog dead-letters them). Returns how many are still
        unacknowledged. Stops early when no broker even accepts a TCP
        connection: waiting cannot deliver anything, and SIGTERM must end the
        process promptly (what is pending is then counted by ``close``)."""
        deadline = time.monotonic() + timeout
        down_since: float | None = None
        while True:
            # Not everything acknowledged within the slice: wait below, bounded by the deadline.
            self._producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
            now = time.monotonic()
            if self._pending and not self.broker_connected():
                down_since = now if down_since is None else down_since
                if now - down_since >= FLUSH_GIVE_UP_SECONDS and not self._listening():
                    log.warning("no Kafka broker is listening at %s; not waiting for the "
                                "flush timeout", ",".join(self._config.bootstrap_servers))
                    return self._pending
            else:
                down_since = None
            with self._lock:
                if self._pending == 0 or time.monotonic() >= deadline:
                    return self._pending
                self._waiting += 1
                try:
                    self._room.wait(min(0.05, max(0.0, deadline - time.monotonic())))
                finally:
                    self._waiting -= 1

    def _listening(self) -> bool:
        try:
            tcp_probe(self._config.bootstrap_servers, 0.5)
        except ConnectorError:
            return False
        return True

    def close(self, timeout: float | None = None) -> int:
        """Flush (bounded), close the producer; count what could not be delivered.

        Returns the number of records counted as dropped (reason
        ``shutdown_timeout``): still unacknowledged, or refused and not yet
        dead-lettered, when the flush timeout ran out.
        """
        timeout = self._config.flush_timeout_seconds if timeout is None else timeout
        left = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._watchdog.join(timeout=5)
        self._closed = True
        self._producer.close(1.0 if left else timeout)
        lost = self._pending
        if lost:
            log.error("%d records were not acknowledged within %.1f s; counted as dropped",
                      lost, timeout)
            metrics.dropped_records_total.labels("shutdown_timeout").inc(lost)
        self._log_summary(time.monotonic() + SUMMARY_SECONDS)
        return lost

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
