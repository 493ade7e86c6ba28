"""Both Kafka client backends against a real broker: one contract, the same partitions.

Each backend must deliver keyed records with headers, fire exactly one
callback per record, put a key on the partition Java's (and kafka-python's
default) partitioner picks, bound ``flush``/``close`` when the broker is
gone, and surface a full local queue as ``QueueFull``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.partitioner.default import DefaultPartitioner, murmur2

from connector.config.model import KafkaConfig
from connector.dev.consume import read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.sink.producers import CLIENTS, ProduceError, Producer, QueueFull, create_producer

pytestmark = pytest.mark.integration


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


class Outcomes:
    """Every callback, by record number; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acks: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
        self.errors: dict[int, list[ProduceError]] = collections.defaultdict(list)
        self.threads: set[str] = set()

    def callbacks(self, i: int) -> tuple[Any, Any]:
        def on_ack(partition: int, offset: int) -> None:
            with self.lock:
                self.acks[i].append((partition, offset))
                self.threads.add(threading.current_thread().name)

        def on_error(exc: ProduceError) -> None:
            with self.lock:
                self.errors[i].append(exc)

        return on_ack, on_error


def send_all(producer: Producer, topic: str, keys: list[bytes], outcomes: Outcomes,
             headers: list[tuple[str, bytes]] | None = None) -> None:
    for i, key in enumerate(keys):
        producer.send(topic, key, f"value {i}".encode(),
                      headers if headers is not None else [("n", str(i).encode())],
                      *outcomes.callbacks(i))


class _Cluster:
    """The partition queries DefaultPartitioner makes, for one topic of ``count`` partitions."""

    def __init__(self, topic: str, count: int) -> None:
        self._topic, self._partitions = topic, set(range(count))

    def topics(self) -> set[str]:
        return {self._topic}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self._partitions) if topic == self._topic else None

    available_partitions_for_topic = partitions_for_topic


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_delivers_keyed_records_with_headers_once_each(kafka_broker: KafkaBroker,
                                                       topic_name: str, client: str) -> None:
    create_topic(kafka_broker.bootstrap_servers, topic_name, 3)
    config = KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers])
    outcomes = Outcomes()
    keys = [f"S{i % 17:04d}USDT".encode() for i in range(500)]
    headers = [("avro.schema.fingerprint", b"abc"), ("bybit.received_ms", b"1"),
               ("bybit.stream", b"v1"), ("empty", b"")]
    with create_producer(client, config) as producer:
        send_all(producer, topic_name, keys, outcomes, headers)
        assert producer.flush(60) == 0
        assert producer.bootstrap_connected()
    assert not outcomes.errors
    assert sorted(outcomes.acks) == list(range(500))
    assert all(len(v) == 1 for v in outcomes.acks.values())
    assert "MainThread" not in outcomes.threads  # callbacks run on the delivery thread
    got = read_all(kafka_broker.bootstrap_servers, [topic_name], timeout=60)[topic_name]
    assert len(got) == 500
    by_value = {m.value: m for m in got}
    for i, key in enumerate(keys):
        message = by_value[f"value {i}".encode()]
        assert message.key == key
        assert message.headers == dict(headers)
        assert (message.partition, message.offset) == outcomes.acks[i][0]


def test_same_key_same_partition_in_both_clients_as_java(kafka_broker: KafkaBroker,
                                                         topic_name: str) -> None:
    partitions = 7
    create_topic(kafka_broker.bootstrap_servers, topic_name, partitions)
    config = KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers])
    keys = ([f"S{i:04d}USDT".encode() for i in range(990)]
            + [b"a", b"ab", b"abc", b"BTCUSDT", "ÉTHUSDT".encode(), b"x" * 100,
               bytes(range(1, 40)), b"\xff\xfe", b"0", b"order-123456789"])
    assert len(set(keys)) == 1000
    # Kafka's default partitioner: kafka-python's DefaultPartitioner (Java's murmur2).
    cluster = _Cluster(topic_name, partitions)
    expected = {i: DefaultPartitioner().partition(topic_name, key, key, None, None, cluster)
                for i, key in enumerate(keys)}
    assert expected == {i: (murmur2(key) & 0x7FFFFFFF) % partitions for i, key in enumerate(keys)}
    chosen = {}
    for client in CLIENTS:
        outcomes = Outcomes()
        with create_producer(client, config) as producer:
            send_all(producer, topic_name, keys, outcomes)
            assert producer.flush(60) == 0
        chosen[client] = {i: acks[0][0] for i, acks in outcomes.acks.items()}
    assert len(set(expected.values())) == partitions
    assert chosen["kafka-python"] == expected
    assert chosen["confluent-kafka"] == expected


@pytest.fixture(scope="module")
def dead_broker() -> Iterator[tuple[KafkaBroker, dict[str, Producer]]]:
    """A broker whose topic both clients have metadata for, then killed."""
    with KafkaBroker() as broker:
        config = KafkaConfig(bootstrap_servers=[broker.bootstrap_servers],
                             max_pending_records=100)
        producers: dict[str, Producer] = {}
        for client in CLIENTS:
            outcomes = Outcomes()
            producer = create_producer(client, config)
            send_all(producer, "warm", [b"k"], outcomes)
            assert producer.flush(60) == 0 and outcomes.acks
            producers[client] = producer
        broker.kill()
        yield broker, producers
        for producer in producers.values():
            producer.close(0)


def test_flush_and_close_are_bounded_without_a_broker(
        dead_broker: tuple[KafkaBroker, dict[str, Producer]], client: str) -> None:
    producer = dead_broker[1][client]
    outcomes = Outcomes()
    send_all(producer, "warm", [b"k"] * 20, outcomes)
    started = time.monotonic()
    assert producer.flush(1.0) == 20
    assert time.monotonic() - started < 10  # generous: a loaded machine
    started = time.monotonic()
    connected = producer.bootstrap_connected()
    assert time.monotonic() - started < 3
    started = time.monotonic()
    assert producer.close(0.5) == 20
    assert time.monotonic() - started < 15
    assert not connected or client == "kafka-python"  # it reports its last known state
    assert not producer.bootstrap_connected()
    deadline = time.monotonic() + 10
    while len(outcomes.errors) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not outcomes.acks
    assert sorted(outcomes.errors) == list(range(20))
    assert all(len(v) == 1 and v[0].code == "closed" for v in outcomes.errors.values())
    assert producer.close(0.5) == 0  # idempotent
    with pytest.raises(ProduceError):
        producer.send("warm", b"k", b"v", [], *outcomes.callbacks(99))


def test_full_local_queue_raises_queue_full(kafka_broker: KafkaBroker, client: str) -> None:
    # confluent-kafka: nothing listens, so records stay queued (it does not block
    # on metadata). kafka-python bootstraps in its constructor: a live broker and
    # a bound of 0, so the first record finds the queue full.
    from connector.dev.kafka_broker import free_port

    outcomes = Outcomes()
    if client == "confluent-kafka":
        config = KafkaConfig(bootstrap_servers=[f"127.0.0.1:{free_port()}"])
        producer = create_producer(client, config, settings={
            "bootstrap.servers": config.bootstrap_servers[0],
            "queue.buffering.max.messages": 5, "statistics.interval.ms": 0})
        send_all(producer, "t", [b"k"] * 5, outcomes)
    else:
        config = KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers])
        producer = create_producer(client, config, max_queued=0)
    try:
        with pytest.raises(QueueFull):
            producer.send("t", b"k", b"v", [], *outcomes.callbacks(5))
        assert 5 not in outcomes.acks and 5 not in outcomes.errors
    finally:
        assert producer.close(0.2) == (5 if client == "confluent-kafka" else 0)
