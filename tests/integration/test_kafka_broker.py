"""The local broker is a real Kafka: produce, consume, survive a restart."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from connector.dev.consume import read_all
from connector.dev.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="lz4")
    try:
        for i, value in enumerate(values):
            producer.send(topic, key=str(i).encode(), value=value,
                          headers=[("h", b"1")]).get(timeout=30)
    finally:
        producer.close()


def test_produce_and_consume(kafka_broker: KafkaBroker, topic_name: str) -> None:
    values = [f"message {i}".encode() for i in range(100)]
    produce(kafka_broker.bootstrap_servers, topic_name, values)
    got = read_all(kafka_broker.bootstrap_servers, [topic_name])[topic_name]
    assert [m.value for m in got] == values
    assert got[0].key == b"0" and got[0].headers == {"h": b"1"}


def test_data_survives_a_restart() -> None:
    with KafkaBroker() as broker:
        produce(broker.bootstrap_servers, "before", [b"a", b"b"])
        broker.restart()
        produce(broker.bootstrap_servers, "after", [b"c"])
        got = read_all(broker.bootstrap_servers, ["before", "after"])
        assert [m.value for m in got["before"]] == [b"a", b"b"]
        assert [m.value for m in got["after"]] == [b"c"]
