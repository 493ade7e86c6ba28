"""Confluent wire format against a real Confluent-compatible registry, read
back by a deserializer nobody here wrote (confluent-kafka's)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistry
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.config.load import loads
from connector.dev.consume import read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.dev.schema_registry import SchemaRegistry
from connector.errors import SchemaRegistryError
from connector.exchange import ExchangeServer
from connector.records import load_schema
from connector.serde.registry import SchemaRegistryClient, subject_for
from connector.serde.serializers import canonical_schema
from connector.service import Connector

pytestmark = pytest.mark.integration


def test_register_is_cached_and_incompatible_change_is_rejected(
        schema_registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient(schema_registry.url)
    schema = load_schema("v2_book_ticker")
    subject = subject_for(f"reg.{time.monotonic_ns()}")
    first = client.register(subject, canonical_schema(schema))
    assert client.register(subject, canonical_schema(schema)) == first
    assert client.lookup(subject, canonical_schema(schema)) == first
    evolved = copy.deepcopy(schema)  # a new optional field: BACKWARD compatible
    evolved["fields"].insert(-1, {"name": "new_field", "type": ["null", "string"],
                                  "default": None, "doc": "x"})
    assert client.register(subject, canonical_schema(evolved)) != first
    broken = copy.deepcopy(schema)  # a new required field: not BACKWARD compatible
    broken["fields"].insert(-1, {"name": "required_field", "type": "string", "doc": "x"})
    with pytest.raises(SchemaRegistryError, match="incompatible"):
        client.register(subject, canonical_schema(broken))


def test_unreachable_registry_is_a_clear_error() -> None:
    with pytest.raises(SchemaRegistryError, match="unreachable"):
        SchemaRegistryClient("http://127.0.0.1:9/apis").register("x-value", '"string"')


def test_confluent_mode_end_to_end(kafka_broker: KafkaBroker,
                                   schema_registry: SchemaRegistry) -> None:
    prefix = f"reg{time.monotonic_ns()}"
    with ExchangeServer(port=0, rate=20, private_interval=0.1) as exchange:
        config = loads(f"""
bybit:
  urls: {{v1: {exchange.url}/spot/quote/ws/v1, v2: {exchange.url}/spot/quote/ws/v2,
          private: {exchange.url}/spot/ws}}
  credentials: {{api_key: demo-key, api_secret: demo-secret}}
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
serialization:
  format: confluent
  schema_registry: {{url: "{schema_registry.url}"}}
metrics: {{enabled: false}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [BTCUSDT]}}
  - {{stream: v1, topic: depth, symbols: [BTCUSDT]}}
  - {{stream: v2, topic: kline, interval: 1m, symbols: [ETHUSDT]}}
  - {{stream: private, topic: executionReport}}
""", env={})
        connector = Connector(config).start()
        time.sleep(2)
        exchange.pause_feeds()
        time.sleep(0.3)
        connector.stop()
    registry = ConfluentRegistry({"url": schema_registry.url})
    topics = [config.kafka_topic(s) for s in config.subscriptions]
    messages = read_all(kafka_broker.bootstrap_servers, topics)
    for topic in topics:
        deserialize = AvroDeserializer(registry)
        assert messages[topic], topic
        for m in messages[topic]:
            assert m.value[0] == 0  # Confluent magic byte
            record: dict[str, Any] = deserialize(
                m.value, SerializationContext(topic, MessageField.VALUE))
            assert record["stream"] in ("v1", "v2", "private")
        latest = registry.get_latest_version(subject_for(topic))
        assert int.from_bytes(messages[topic][0].value[1:5], "big") == latest.schema_id
    trade = AvroDeserializer(registry)(messages[topics[0]][-1].value,
                                       SerializationContext(topics[0], MessageField.VALUE))
    assert isinstance(trade["buyer_is_taker"], bool) and trade["symbol"] == "BTCUSDT"


def test_incompatible_schema_fails_the_start_clearly(kafka_broker: KafkaBroker,
                                                     schema_registry: SchemaRegistry) -> None:
    topic = f"clash{time.monotonic_ns()}"
    SchemaRegistryClient(schema_registry.url).register(subject_for(topic), canonical_schema(
        {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "long"}]}))
    config = loads(f"""
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
serialization:
  format: confluent
  schema_registry: {{url: "{schema_registry.url}"}}
metrics: {{enabled: false}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [BTCUSDT], kafka_topic: {topic}}}
""", env={})
    connector = Connector(config)
    with pytest.raises(SchemaRegistryError, match=f"{topic}-value"):
        connector.start()
    connector.stop()
