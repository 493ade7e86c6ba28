"""The setting names each Kafka client accepts, and the topic settings a broker knows.

Plain data with no import of any Kafka client or of the sink, so config
validation and the JSON Schema can check names without starting (or even
installing) a backend, and config stays free of the sink's imports.
"""

from __future__ import annotations

from collections.abc import Iterable

# kafka-python KafkaProducer settings a user may pass through under `kafka.producer`.
# (`bootstrap_servers`, security and serializers are set elsewhere.)
PRODUCER_KEYS = frozenset({
    "acks", "compression_type", "retries", "batch_size", "linger_ms", "allow_auto_create_topics",
    "max_block_ms", "max_request_size", "request_timeout_ms", "retry_backoff_ms",
    "max_in_flight_requests_per_connection", "enable_idempotence", "delivery_timeout_ms",
    "metadata_max_age_ms", "connections_max_idle_ms", "reconnect_backoff_ms",
    "reconnect_backoff_max_ms", "receive_buffer_bytes", "send_buffer_bytes",
    "api_version", "bootstrap_timeout_ms", "client_id", "metrics_enabled",
})

# Topic-level settings `kafka.topic_creation.configs` may give (Kafka's TopicConfig
# names, 4.x). A misspelt name would make the broker refuse to create the topic.
TOPIC_CONFIG_KEYS = frozenset({
    "cleanup.policy", "compression.type", "compression.gzip.level", "compression.lz4.level",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
})

# Producer-relevant librdkafka properties a user may set under `kafka.producer`
# when `kafka.client` is confluent-kafka (librdkafka's CONFIGURATION.md, global
# and topic properties marked * or P). Left out on purpose: bootstrap and
# security (set from `kafka.bootstrap_servers` / `kafka.security`), callbacks,
# `partitioner` (same partition for the same key as the default client is a
# guarantee), `queue.buffering.max.messages` (from `kafka.max_pending_records`),
# `delivery.report.only.error` (every acknowledgement is counted) and
# transactions.
LIBRDKAFKA_KEYS = frozenset({
    # global
    "client.id", "client.rack", "client.dns.lookup", "message.max.bytes",
    "message.copy.max.bytes", "receive.message.max.bytes",
    "max.in.flight.requests.per.connection", "max.in.flight",
    "metadata.recovery.strategy", "metadata.recovery.rebootstrap.trigger.ms",
    "topic.metadata.refresh.interval.ms", "metadata.max.age.ms",
    "topic.metadata.refresh.fast.interval.ms", "topic.metadata.refresh.sparse",
    "topic.metadata.propagation.max.ms", "debug", "socket.timeout.ms",
    "socket.send.buffer.bytes", "socket.receive.buffer.bytes", "socket.keepalive.enable",
    "socket.nagle.disable", "socket.max.fails", "broker.address.ttl", "broker.address.family",
    "socket.connection.setup.timeout.ms", "connections.max.idle.ms", "reconnect.backoff.ms",
    "reconnect.backoff.max.ms", "statistics.interval.ms", "log_level", "log.connection.close",
    "api.version.request.timeout.ms", "allow.auto.create.topics", "enable.metrics.push",
    "retry.backoff.ms", "retry.backoff.max.ms",
    # producer
    "enable.idempotence", "enable.gapless.guarantee", "queue.buffering.max.kbytes",
    "queue.buffering.max.ms", "linger.ms", "message.send.max.retries", "retries",
    "queue.buffering.backpressure.threshold", "compression.codec", "compression.type",
    "batch.num.messages", "batch.size", "sticky.partitioning.linger.ms",
    # topic (producer)
    "request.required.acks", "acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "compression.level",
})


def allowed_settings(client: str) -> frozenset[str]:
    """The names ``kafka.producer`` may use for ``client`` (its library's own names)."""
    if client == "confluent-kafka":
        return LIBRDKAFKA_KEYS
    return PRODUCER_KEYS


def unknown_settings(client: str, names: Iterable[str]) -> list[str]:
    """The names in ``names`` that ``client`` does not take (sorted), for config errors."""
    allowed = allowed_settings(client)
    return sorted(name for name in names if name not in allowed)
