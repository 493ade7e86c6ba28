"""librdkafka settings for the confluent-kafka backend (no import of the client).

Kept apart from ``confluent.py`` so the defaults and the translation from a
``KafkaConfig`` load without the optional ``confluent-kafka`` package; the names
a user may set live in ``connector/config/kafka_keys.py``.
"""

from __future__ import annotations

from typing import Any

# Safe defaults, as the default client's; anything under `kafka.producer` overrides them.
# `message.timeout.ms` 0 is librdkafka's "no delivery deadline" (Kafka Connect's
# delivery.timeout.ms = max): a record waits out any broker outage, memory is bounded
# by `kafka.max_pending_records`. librdkafka's produce() never blocks, so there is no
# max.block.ms to set.
LIBRDKAFKA_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 10,
    "message.timeout.ms": 0,
    "retry.backoff.ms": 200,
    "reconnect.backoff.max.ms": 5_000,
    "client.id": "bybit-kafka-connector",
    # Broker states for bootstrap_connected() and the retry rate, on the delivery thread.
    "statistics.interval.ms": 5_000,
}


def librdkafka_settings(config: Any, queue_headroom: int = 1_000) -> dict[str, Any]:
    """confluent_kafka.Producer settings from a ``KafkaConfig`` (secrets resolved).

    ``partitioner=murmur2_random`` is Java's (and kafka-python's) keyed
    partitioning: same key, same partition, whichever client wrote it.
    """
    settings = dict(LIBRDKAFKA_DEFAULTS)
    if "delivery.timeout.ms" in config.producer:  # librdkafka's alias: one of the two
        del settings["message.timeout.ms"]
    settings.update(config.producer)
    settings["bootstrap.servers"] = ",".join(config.bootstrap_servers)
    settings["partitioner"] = "murmur2_random"
    settings["queue.buffering.max.messages"] = config.max_pending_records + queue_headroom
    sec = config.security
    settings["security.protocol"] = sec.security_protocol.lower()
    if sec.sasl_mechanism:
        settings["sasl.mechanisms"] = sec.sasl_mechanism
    if sec.sasl_plain_username:
        settings["sasl.username"] = sec.sasl_plain_username
    if sec.sasl_plain_password is not None:
        settings["sasl.password"] = sec.sasl_plain_password.get()
    for ours, theirs in (("ssl_cafile", "ssl.ca.location"),
                         ("ssl_certfile", "ssl.certificate.location"),
                         ("ssl_keyfile", "ssl.key.location")):
        if getattr(sec, ours):
            settings[theirs] = getattr(sec, ours)
    if sec.ssl_password is not None:
        settings["ssl.key.password"] = sec.ssl_password.get()
    if sec.security_protocol in ("SSL", "SASL_SSL"):
        settings["ssl.endpoint.identification.algorithm"] = (
            "https" if sec.ssl_check_hostname else "none")
    return settings
