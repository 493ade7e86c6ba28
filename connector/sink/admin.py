"""The Kafka client's set-up, apart from the sink's delivery logic: producer
settings from the config, the memoised key partitioner, topic creation, the
start-up reachability probe, and Kafka errors as bounded reasons."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka.errors import KafkaError
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import DefaultPartitioner, murmur2

from connector.config.model import KafkaConfig
from connector.errors import ConfigError
from connector.sink import probe as kafka_probe

log = logging.getLogger(__name__)

# Java's Integer.MAX_VALUE: what Kafka Connect's source workers set, "never give up".
NO_DEADLINE_MS = 2**31 - 1

# Safe defaults; anything under `kafka.producer` overrides them. As Kafka Connect's
# source workers: idempotent, and no delivery deadline (a record waits out any broker
# outage; memory is bounded by `kafka.max_pending_records`, not by time). `max_block_ms`
# stays bounded: kafka-python 3 has no buffer memory to wait for, it only bounds a
# send's wait for topic metadata, on a WebSocket thread that must keep its heartbeat
# (metadata is fetched at start, so this wait is rare).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": "lz4",
    "linger_ms": 10,
    "batch_size": 256 * 1024,
    "max_block_ms": 10_000,
    "delivery_timeout_ms": NO_DEADLINE_MS,
    "retry_backoff_ms": 200,
    "reconnect_backoff_max_ms": 5_000,
    "client_id": "bybit-kafka-connector",
}

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


def new_topic(config: KafkaConfig, partitions: int | None = None) -> dict[str, Any]:
    """kafka-python's ``create_topics`` options for a topic the connector creates,
    from ``kafka.topic_creation`` (``-1``: the broker's default). ``partitions``
    overrides the configured count (the coordination topic's is the shard count)."""
    tc = config.topic_creation
    return {
        "num_partitions": partitions or tc.partitions or -1,
        "replication_factor": tc.replication_factor or -1,
        "configs": {k: str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in tc.configs.items()},
    }


# Refusals of the requested topic settings: a config mistake, never retried.
_REFUSED_SETTINGS = ("InvalidReplicationFactorError", "InvalidConfigurationError",
                     "InvalidPartitionsError", "PolicyViolationError",
                     "InvalidReplicaAssignmentError")


def refused_topic_settings(exc: BaseException, topics: list[str]) -> ConfigError | None:
    """A ``ConfigError`` naming ``kafka.topic_creation`` if the broker refused the
    topic settings themselves (``exc`` from ``create_topics``), else None."""
    if type(exc).__name__ not in _REFUSED_SETTINGS:
        return None
    return ConfigError("kafka.topic_creation",
                       f"the broker refused to create {', '.join(topics)}: "
                       f"{type(exc).__name__}: {exc}",
                       "a replication factor above the number of brokers, or a topic-level "
                       "setting the broker does not accept?")


def ensure_topics(config: KafkaConfig, topics: list[str], create: bool = True,
                  bootstrap_timeout: float | None = None) -> list[str]:
    """Create the ``topics`` that do not exist yet, as ``kafka.topic_creation`` says.

    Best effort where the connector may not create topics (ACLs): it logs and
    relies on topics provisioned by other means. Returns those created. Raises
    ``ConfigError`` if the broker refuses the configured settings (replication
    factor, partitions, topic-level settings): topics created with other
    settings, or by auto-creation with the broker's, would hide the mistake.
    With ``bootstrap_timeout`` it is also the start-up reachability probe: no
    broker answering within that many seconds raises ``DeliveryError``, and
    one that answers but refuses these security settings raises
    ``KafkaAccessError`` naming why (see ``kafka_probe``).
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    from connector.errors import DeliveryError

    settings = {k: v for k, v in producer_settings(config).items()
                if k in KafkaAdminClient.DEFAULT_CONFIG}
    if bootstrap_timeout is not None:
        settings["bootstrap_timeout_ms"] = int(bootstrap_timeout * 1000)
        kafka_probe.probe(config, bootstrap_timeout)
    try:
        admin = KafkaAdminClient(**settings)
    except KafkaError as exc:
        if bootstrap_timeout is not None:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        log.warning("cannot check Kafka topics (%s); relying on existing topics", exc)
        return []
    try:
        if not create:
            return []
        missing = sorted(set(topics) - set(admin.list_topics()))
        if missing:
            try:
                admin.create_topics({t: new_topic(config) for t in missing})
            except TopicAlreadyExistsError:
                pass  # another replica was first
            log.info("created Kafka topics: %s", ", ".join(missing))
        return missing
    except KafkaError as exc:
        refused = refused_topic_settings(exc, missing)
        if refused is not None:
            raise refused from exc
        log.warning("could not create Kafka topics (%s); relying on existing topics", exc)
        return []
    finally:
        admin.close()


def tcp_probe(addresses: Sequence[str], timeout: float) -> None:
    """Raise ``DeliveryError`` unless one bootstrap address accepts a TCP connection.

    Checked before building a Kafka client: a client that cannot bootstrap
    leaves I/O threads behind that delay the process's exit by seconds.
    """
    import socket

    from connector.errors import DeliveryError

    errors = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                          timeout=timeout):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    raise DeliveryError("cannot connect: " + "; ".join(errors))


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
