"""Kafka client backends behind one small interface.

The sink owns what every backend shares (the pending bound, accounting, dead
letters, metrics); a backend only moves bytes to Kafka and reports each
record's fate. Two backends, chosen by ``kafka.client``:

* ``kafka-python`` (the default, a declared dependency): pure Python, its
  own I/O thread; ``kafka_python.KafkaPythonProducer``.
* ``confluent-kafka`` (optional extra ``confluent``): librdkafka, a C client
  several times cheaper per record; ``confluent.ConfluentProducer``.

Both pick the same partition for the same key (Kafka's murmur2, as the Java
client), so switching backends keeps every symbol on its partition.

Delivery contract shared by both: ``send`` either raises (``QueueFull`` or
``ProduceError``; nothing was queued and no callback will fire) or returns
having queued the record, after which exactly one of its two callbacks fires,
once, on the backend's delivery thread: ``on_ack(partition, offset)`` or
``on_error(ProduceError)``. That includes ``close``: records still queued when
its timeout runs out fail with ``ProduceError(code="closed")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from connector.errors import DeliveryError

Headers = list[tuple[str, bytes]]
AckCallback = Callable[[int, int], None]  # (partition, offset)
ErrorCallback = Callable[["ProduceError"], None]
Client = Literal["kafka-python", "confluent-kafka"]
CLIENTS: tuple[Client, ...] = ("kafka-python", "confluent-kafka")

# The local queue may hold a little more than the sink's pending bound: a
# record leaves the sink's count in its callback, a moment before the client
# forgets it, so a queue of exactly the bound would refuse a record the sink
# already made room for.
QUEUE_HEADROOM = 1_000


class QueueFull(DeliveryError):
    """The client's local queue is full; the record was not queued (count it)."""


class ProduceError(DeliveryError):
    """Kafka (or the client) refused a record.

    ``reason`` is one of ``metrics.KAFKA_ERROR_REASONS`` (a bounded label);
    ``code`` the client's own name for the error (for logs, never a label);
    ``retriable`` whether the same record may succeed if sent again; ``fatal``
    whether the producer itself is unusable and must be replaced.
    """

    def __init__(self, message: str, *, reason: str = "other", code: str = "",
                 retriable: bool = False, fatal: bool = False) -> None:
        super().__init__(message)
        self.reason, self.code, self.retriable, self.fatal = reason, code, retriable, fatal


class Producer(Protocol):
    """What the sink needs from a Kafka client. Thread-safe ``send``."""

    client: Client

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers,
             on_ack: AckCallback, on_error: ErrorCallback) -> None:
        """Queue one record; never blocks. Raises ``QueueFull`` or ``ProduceError``."""
        ...

    def poll(self, timeout: float) -> int:
        """Serve delivery callbacks on this thread for up to ``timeout`` s (0 if the
        backend has its own delivery thread and nothing to serve here)."""
        ...

    def flush(self, timeout: float) -> int:
        """Send what is queued and wait up to ``timeout`` s for every callback.
        Returns how many records are still unresolved."""
        ...

    def close(self, timeout: float) -> int:
        """Flush up to ``timeout`` s, fail what is left (``code="closed"``), stop.
        Returns how many records failed that way. Idempotent."""
        ...

    def bootstrap_connected(self) -> bool:
        """Whether the client is connected to a broker now. Never blocks long (<= 0.5 s)."""
        ...

    def retries_per_second(self) -> float:
        """The client's recent retry rate, for ``kafka_record_retries_per_second``."""
        ...

    def warm(self, topic: str) -> None:
        """Fetch ``topic``'s metadata ahead of the first record, if that saves a wait."""
        ...

    @property
    def fatal_error(self) -> str | None:
        """Why the producer is unusable (replace it), or None."""
        ...


def reason_of(name: str) -> str:
    """A Kafka error name (exception class or librdkafka code) as a bounded reason."""
    upper = name.upper()
    if "TIMEOUT" in upper or "TIMED_OUT" in upper:
        return "timeout"
    if "TOO_LARGE" in upper or "TOOLARGE" in upper:
        return "record_too_large"
    if "AUTHORIZATION" in upper or "AUTHENTICATION" in upper:
        return "authorization_failed"
    if "UNKNOWN_TOPIC" in upper or "UNKNOWNTOPIC" in upper or "UNKNOWN_PARTITION" in upper:
        return "unknown_topic"
    if any(word in upper for word in ("CONNECTION", "NOTREADY", "NOT_LEADER", "NOTLEADER",
                                      "TRANSPORT", "BROKERS_DOWN", "NETWORK", "LEADER_NOT",
                                      "RESOLVE")):
        return "network"
    return "other"


def create_producer(client: str, config: Any, **options: Any) -> Producer:
    """The backend for ``client`` (``kafka.client``) over ``config`` (a ``KafkaConfig``).

    Raises ``DeliveryError`` if the client cannot start (bad settings), and
    ``ConfigError`` if confluent-kafka is chosen but not installed.
    """
    if client == "kafka-python":
        from connector.sink.producers.kafka_python import KafkaPythonProducer

        return KafkaPythonProducer(config, **options)
    if client == "confluent-kafka":
        from connector.sink.producers.confluent import ConfluentProducer

        return ConfluentProducer(config, **options)
    raise ValueError(f"unknown Kafka client {client!r}; expected one of {', '.join(CLIENTS)}")
