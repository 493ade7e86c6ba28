"""Topics the connector creates carry ``kafka.topic_creation``'s settings, read
back from a real broker; settings the broker refuses stop start-up with a
``ConfigError`` instead of leaving the topic to auto-creation."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from connector.config.load import loads
from connector.dev.kafka_broker import KafkaBroker
from connector.errors import ConfigError
from connector.sink.admin import ensure_topics

pytestmark = pytest.mark.integration


def kafka_config(bootstrap: str, topic_creation: str):  # type: ignore[no-untyped-def]
    return loads(f"""
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_creation: {topic_creation}
subscriptions: [{{stream: v5, topic: publicTrade, symbols: [BTCUSDT]}}]
""", env={}).kafka


def test_created_topics_have_the_configured_partitions_and_settings(
        kafka_broker: KafkaBroker, topic_name: str) -> None:
    config = kafka_config(kafka_broker.bootstrap_servers,
                          "{partitions: 3, replication_factor: 1, configs: "
                          "{min.insync.replicas: 1, retention.ms: 3600000}}")
    assert ensure_topics(config, [topic_name]) == [topic_name]
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        (described,) = admin.describe_topics([topic_name])
        assert len(described["partitions"]) == 3
        assert {len(p["replica_nodes"]) for p in described["partitions"]} == {1}
        described_configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic_name)], config_filter="all")
        values = {k: v["value"] for k, v in described_configs["topic"][topic_name].items()}
        assert values["retention.ms"] == "3600000"
        assert values["min.insync.replicas"] == "1"
    finally:
        admin.close()
    assert ensure_topics(config, [topic_name]) == []  # exists: left as it is


def test_a_replication_factor_the_cluster_cannot_give_is_a_config_error(
        kafka_broker: KafkaBroker, topic_name: str) -> None:
    config = kafka_config(kafka_broker.bootstrap_servers, "{replication_factor: 3}")
    with pytest.raises(ConfigError) as info:
        ensure_topics(config, [topic_name], bootstrap_timeout=10)
    assert info.value.path == "kafka.topic_creation"
    assert "InvalidReplicationFactorError" in str(info.value)
