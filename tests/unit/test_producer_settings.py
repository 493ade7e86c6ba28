"""Producer settings per backend: names librdkafka knows, the config's security mapped."""

from __future__ import annotations

import confluent_kafka
import pytest

from connector.config.kafka_keys import LIBRDKAFKA_KEYS, allowed_settings, unknown_settings
from connector.config.model import KafkaConfig, KafkaSecurity, Secret
from connector.sink.producers import CLIENTS, reason_of
from connector.sink.producers.confluent import producer_settings
from connector.sink.producers.kafka_python import producer_settings as kafka_python_settings


def _librdkafka_rejects_name(name: str) -> bool:
    try:
        confluent_kafka.Producer({name: "\x01not a value"})
    except confluent_kafka.KafkaException as exc:
        return "No such configuration property" in exc.args[0].str()
    return False  # accepted: a known free-text property


@pytest.mark.parametrize("name", sorted(LIBRDKAFKA_KEYS))
def test_every_allowed_name_is_a_librdkafka_property(name: str) -> None:
    assert not _librdkafka_rejects_name(name)


def test_a_made_up_name_is_refused_by_both() -> None:
    assert _librdkafka_rejects_name("linger.msec")
    assert unknown_settings("confluent-kafka", ["linger.ms", "linger_ms", "acks"]) == [
        "linger_ms"]
    assert unknown_settings("kafka-python", ["linger.ms", "linger_ms", "acks"]) == [
        "linger.ms"]
    for client in CLIENTS:
        assert "bootstrap.servers" not in allowed_settings(client)
        assert "partitioner" not in allowed_settings(client)


SECURE = KafkaConfig(
    bootstrap_servers=["a:9093", "b:9093"], max_pending_records=5_000,
    producer={"linger.ms": 25, "compression.type": "zstd"},
    security=KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                           sasl_plain_username="u", sasl_plain_password=Secret("p"),
                           ssl_cafile="/ca.pem", ssl_certfile="/cert.pem",
                           ssl_keyfile="/key.pem", ssl_password=Secret("kp"),
                           ssl_check_hostname=False))


def test_librdkafka_settings_map_the_config() -> None:
    settings = producer_settings(SECURE)
    assert settings["bootstrap.servers"] == "a:9093,b:9093"
    assert settings["acks"] == "all" and settings["enable.idempotence"] is True
    assert settings["partitioner"] == "murmur2_random"
    assert settings["linger.ms"] == 25 and settings["compression.type"] == "zstd"
    assert settings["queue.buffering.max.messages"] >= 5_000
    assert {k: settings[k] for k in (
        "security.protocol", "sasl.mechanisms", "sasl.username", "sasl.password",
        "ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
        "ssl.endpoint.identification.algorithm")} == {
        "security.protocol": "sasl_ssl", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/cert.pem", "ssl.key.location": "/key.pem",
        "ssl.key.password": "kp", "ssl.endpoint.identification.algorithm": "none"}
    plain = producer_settings(KafkaConfig())
    assert plain["security.protocol"] == "plaintext"
    assert not any(k.startswith(("ssl.", "sasl.")) for k in plain)
    # Every generated name is one librdkafka takes.
    assert not [k for k in settings if _librdkafka_rejects_name(k)]


def test_kafka_python_settings_map_the_config() -> None:
    settings = kafka_python_settings(KafkaConfig(producer={"linger_ms": 5},
                                                 security=SECURE.security))
    assert settings["linger_ms"] == 5 and settings["acks"] == "all"
    assert settings["sasl_plain_password"] == "p" and settings["ssl_check_hostname"] is False


@pytest.mark.parametrize(("name", "reason"), [
    ("KafkaTimeoutError", "timeout"), ("_MSG_TIMED_OUT", "timeout"),
    ("MessageSizeTooLargeError", "record_too_large"), ("MSG_SIZE_TOO_LARGE", "record_too_large"),
    ("TopicAuthorizationFailedError", "authorization_failed"),
    ("TOPIC_AUTHORIZATION_FAILED", "authorization_failed"),
    ("UnknownTopicOrPartitionError", "unknown_topic"), ("_UNKNOWN_TOPIC", "unknown_topic"),
    ("KafkaConnectionError", "network"), ("_TRANSPORT", "network"),
    ("NOT_LEADER_FOR_PARTITION", "network"), ("_ALL_BROKERS_DOWN", "network"),
    ("INVALID_RECORD", "other"),
])
def test_error_names_map_to_bounded_reasons(name: str, reason: str) -> None:
    assert reason_of(name) == reason


def test_no_delivery_deadline_by_default_for_both_clients() -> None:
    """Kafka Connect's source-worker defaults: a record waits out any broker outage
    (only the pending bound limits memory); both clients accept the values."""
    from kafka.producer.record_accumulator import RecordAccumulator

    kp = kafka_python_settings(KafkaConfig())
    assert kp["delivery_timeout_ms"] == 2**31 - 1 and kp["enable_idempotence"] is True
    RecordAccumulator(**{k: v for k, v in kp.items() if k != "partitioner"})  # range check
    rd = producer_settings(KafkaConfig())
    assert rd["message.timeout.ms"] == 0 and rd["enable.idempotence"] is True  # 0 = infinite
    confluent_kafka.Producer({**rd, "bootstrap.servers": "127.0.0.1:1", "log_level": 0})


def test_a_delivery_deadline_stays_configurable() -> None:
    assert kafka_python_settings(KafkaConfig(producer={"delivery_timeout_ms": 60_000}))[
        "delivery_timeout_ms"] == 60_000
    rd = producer_settings(KafkaConfig(client="confluent-kafka",
                                       producer={"delivery.timeout.ms": 60_000}))
    # librdkafka's alias replaces the default rather than contradicting it
    assert rd["delivery.timeout.ms"] == 60_000 and "message.timeout.ms" not in rd
    confluent_kafka.Producer({**rd, "bootstrap.servers": "127.0.0.1:1", "log_level": 0})
