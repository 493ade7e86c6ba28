"""``kafka.topic_creation``: how missing topics are created (partitions,
replication factor, topic-level settings under Kafka's names), and the exact
error for each bad value."""

from __future__ import annotations

import textwrap

import pytest

from connector.config.load import loads
from connector.errors import ConfigError
from connector.sink.admin import new_topic, refused_topic_settings

SUB = """
subscriptions:
  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}
"""


def kafka(topic_creation: str) -> str:
    return textwrap.dedent(f"""
        kafka:
          topic_creation: {topic_creation}
        """) + SUB


def test_unset_means_the_brokers_defaults() -> None:
    config = loads(SUB, env={})
    assert new_topic(config.kafka) == {"num_partitions": -1, "replication_factor": -1,
                                       "configs": {}}


def test_settings_reach_the_create_request_as_kafka_strings() -> None:
    config = loads(kafka("{partitions: 6, replication_factor: 3, configs: "
                         "{min.insync.replicas: 2, unclean.leader.election.enable: false, "
                         "retention.ms: 86400000}}"), env={})
    assert new_topic(config.kafka) == {
        "num_partitions": 6, "replication_factor": 3,
        "configs": {"min.insync.replicas": "2", "unclean.leader.election.enable": "false",
                    "retention.ms": "86400000"}}
    # the coordination topic keeps its shard count, with the same replication
    assert new_topic(config.kafka, partitions=12)["num_partitions"] == 12


@pytest.mark.parametrize(("value", "error"), [
    ("{replication_factor: 0}",
     "kafka.topic_creation.replication_factor: must be between 1 and 32767, got 0"),
    ("{partitions: 0}",
     "kafka.topic_creation.partitions: must be between 1 and 100000, got 0"),
    ("{partitions: six}",
     "kafka.topic_creation.partitions: expected an integer, got 'six'"),
    ("{configs: {min.insync.replica: 2}}",
     "kafka.topic_creation.configs.min.insync.replica: is not a Kafka topic-level setting "
     "(did you mean 'min.insync.replicas'?)"),
    ("{configs: {retention.ms: [1]}}",
     "kafka.topic_creation.configs.retention.ms: expected a string, number or boolean, "
     "got a list"),
    ("{replication_factor: 1, configs: {min.insync.replicas: 2}}",
     "kafka.topic_creation.configs.min.insync.replicas: 2 is more than replication_factor "
     "(1): no acks=all write could succeed (e.g. replication_factor: 3 with "
     "min.insync.replicas: 2)"),
    ("{replicas: 3}",
     "kafka.topic_creation.replicas: unknown key (known keys: configs, partitions, "
     "replication_factor)"),
])
def test_bad_topic_creation_names_the_yaml_path(value: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(kafka(value), env={})
    assert str(info.value) == error


def test_a_refused_setting_is_a_config_error_and_other_kafka_errors_are_not() -> None:
    from kafka.errors import InvalidReplicationFactorError, RequestTimedOutError

    refused = refused_topic_settings(InvalidReplicationFactorError("3 > 1 brokers"), ["a", "b"])
    assert refused is not None and refused.path == "kafka.topic_creation"
    assert "refused to create a, b: InvalidReplicationFactorError" in str(refused)
    assert refused_topic_settings(RequestTimedOutError(), ["a"]) is None
