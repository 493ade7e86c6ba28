"""A real cluster loses a partition leader: three KRaft nodes, topics with
replication factor 3 and ``min.insync.replicas=2`` (created by the connector
from ``kafka.topic_creation``), v5 trades and order books streaming from the
local exchange, and the node that leads the busiest partitions killed with
``kill -9`` mid-stream, then started again.

With ``acks=all`` and an idempotent producer, a leader change moves nothing
off its topic: every trade and book update the exchange sent lands once, in
its key's order, and nothing is dead-lettered or dropped. Recovery is the
time from the kill until every partition the dead node led has acknowledged
a new record under its new leader.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_rig import SYMBOLS, ConnectorProcess, Outcome, wait_for
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_cluster import FAILOVER_PROPERTIES, KafkaCluster
from connector.exchange import ExchangeServer

pytestmark = pytest.mark.integration

KP, CK = "kafka-python", "confluent-kafka"
PARTITIONS = 6
TOPIC_CREATION = (f"{{partitions: {PARTITIONS}, replication_factor: 3, "
                  "configs: {min.insync.replicas: 2}}")
# A dead node is fenced (its leaderships moved) this many seconds after its last heartbeat.
SESSION_TIMEOUT = int(FAILOVER_PROPERTIES["broker.session.timeout.ms"]) / 1000
STREAMS = {"publicTrade": "v5_public_trade", "orderbook.50": "v5_orderbook"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[KafkaCluster]:
    """Three broker+controller nodes of this module's own: the tests kill them."""
    with KafkaCluster(nodes=3, start_timeout=180) as nodes:
        yield nodes


class V5Connector(ConnectorProcess):
    """The connector streaming v5 trades and 50-level books into the cluster."""

    def __init__(self, exchange: ExchangeServer, cluster: KafkaCluster, prefix: str,
                 workdir: Path, client: str) -> None:
        super().__init__(exchange, cluster.bootstrap_servers, prefix, workdir)
        self.topics = {stream: f"{prefix}.v5.{stream}" for stream in STREAMS}
        servers = ", ".join(f'"{n.bootstrap_servers}"' for n in cluster.nodes)
        symbols = ", ".join(SYMBOLS)
        self.config.write_text(f"""
bybit:
  urls: {{v5: "{exchange.url}/v5/public/spot"}}
  ping_interval_seconds: 1
kafka:
  bootstrap_servers: [{servers}]
  client: {client}
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {self.dead_letter_topic}
  topic_creation: {TOPIC_CREATION}
metrics: {{host: 127.0.0.1, port: {self.port}}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [{symbols}]}}
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [{symbols}]}}
""")

    def start(self) -> V5Connector:
        super().start()
        wait_for(lambda: self.metric("bybit_connector_subscriptions_active")
                 >= len(STREAMS) * len(SYMBOLS), 60, "not every v5 topic subscribed")
        return self


def end_offsets(bootstrap: list[str], partitions: list[TopicPartition]
                ) -> dict[TopicPartition, int]:
    """High watermarks (acknowledged with acks=all) of ``partitions``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, request_timeout_ms=3000,
                             session_timeout_ms=2500, heartbeat_interval_ms=500)
    try:
        return {tp: int(o) for tp, o in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


class AckWatch:
    """Polls the high watermarks of ``partitions`` from the surviving nodes; notes
    when each first moves past its value at the kill (its first acknowledgement
    under the new leader)."""

    def __init__(self, bootstrap: list[str], at_kill: dict[TopicPartition, int],
                 killed_at: float) -> None:
        self.at_kill, self.killed_at = at_kill, killed_at
        self.first_ack: dict[TopicPartition, float] = {}
        self._bootstrap = bootstrap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ack-watch")
        self._thread.start()

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._stop.is_set() and len(self.first_ack) < len(self.at_kill):
            try:
                if consumer is None:
                    consumer = KafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                             enable_auto_commit=False, request_timeout_ms=2000,
                                             session_timeout_ms=1500,
                                             heartbeat_interval_ms=500)
                ends = consumer.end_offsets([tp for tp in self.at_kill
                                             if tp not in self.first_ack])
            except (KafkaError, OSError):
                time.sleep(0.05)
                continue
            now = time.monotonic() - self.killed_at
            for tp, end in ends.items():
                if end > self.at_kill[tp]:
                    self.first_ack.setdefault(tp, now)
            time.sleep(0.05)
        if consumer is not None:
            consumer.close()

    def done(self) -> bool:
        return len(self.first_ack) == len(self.at_kill)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def sent(exchange: ExchangeServer) -> dict[str, dict[str, list[Any]]]:
    """Per stream and symbol, what the exchange wrote in order: trade ids, book ``u``."""
    out: dict[str, dict[str, list[Any]]] = {s: defaultdict(list) for s in STREAMS}
    for frame in exchange.v5.sent_frames(stream="v5"):
        stream, _, symbol = frame["topic"].rpartition(".")
        if stream == "publicTrade":
            out[stream][symbol].extend(t["i"] for t in frame["data"])
        elif stream in out:
            out[stream][symbol].append(frame["data"]["u"])
    return out


def landed(conn: V5Connector, bootstrap: list[str]) -> tuple[dict[str, dict[str, list[Any]]], int]:
    """Per stream and symbol, what Kafka holds in partition order; dead letters."""
    messages = read_all(bootstrap, [*conn.topics.values(), conn.dead_letter_topic],
                        timeout=120)
    decoder = AvroDecoder()
    out: dict[str, dict[str, list[Any]]] = {s: defaultdict(list) for s in STREAMS}
    for stream, topic in conn.topics.items():
        for m in sorted(messages[topic], key=lambda m: (m.partition, m.offset)):
            record = decoder.decode(STREAMS[stream], m)
            assert m.key == record["symbol"].encode()
            out[stream][record["symbol"]].append(
                record["trade_id"] if stream == "publicTrade" else record["update_id"])
    return out, len(messages[conn.dead_letter_topic])


def busiest_node(cluster: KafkaCluster, topics: list[str]
                 ) -> tuple[int, dict[TopicPartition, int]]:
    """The node leading the most records so far, and the partitions it leads
    that carry records (with their high watermarks)."""
    states = cluster.partitions(topics)
    ends = end_offsets(cluster.bootstrap_servers.split(","),
                       [TopicPartition(s.topic, s.partition) for s in states])
    load: Counter[int] = Counter()
    for s in states:
        load[s.leader] += ends[TopicPartition(s.topic, s.partition)]
    victim = load.most_common(1)[0][0]
    return victim, {TopicPartition(s.topic, s.partition): ends[TopicPartition(s.topic,
                                                                              s.partition)]
                    for s in states if s.leader == victim
                    and ends[TopicPartition(s.topic, s.partition)] > 0}


def check_topics(cluster: KafkaCluster, topics: list[str]) -> None:
    """The connector created its topics as configured: 6 partitions, 3 replicas,
    min.insync.replicas=2 (the cluster's own default is 1)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    states = cluster.partitions(topics)
    assert len(states) == PARTITIONS * len(topics)
    assert {len(s.replicas) for s in states} == {3}
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers.split(","))
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        admin.close()
    for topic in topics:
        assert described["topic"][topic]["min.insync.replicas"]["value"] == "2", topic


def finish(conn: V5Connector, exchange: ExchangeServer) -> None:
    """Pause the feeds, wait until the connector has read every frame sent, SIGTERM."""
    exchange.v5.pause(True)

    def caught_up() -> bool:
        counters = exchange.v5.stats()["counters"]
        sent = sum(n for k, n in counters.items() if k.startswith("frames.v5."))
        return conn.metric("bybit_connector_frames_received_total") >= sent

    wait_for(caught_up, 60, "the connector did not read every frame the exchange sent")
    assert conn.sigterm() == 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("client", [KP, CK])
def test_partition_leader_kill9_loses_nothing(cluster: KafkaCluster, tmp_path: Path,
                                              record_outcome: list[Outcome],
                                              client: str) -> None:
    with ExchangeServer(port=0, rate=20, record_frames=2_000_000, idle_timeout=None) as exchange:
        conn = V5Connector(exchange, cluster, f"f.leader.{client}", tmp_path, client)
        conn.start()
        topics = list(conn.topics.values())
        check_topics(cluster, topics)
        time.sleep(5)

        victim, moved = busiest_node(cluster, topics)
        assert moved, "the busiest node leads no partition with records"
        killed_at = time.monotonic()
        cluster.kill(victim)
        survivors = [n.bootstrap_servers for i, n in enumerate(cluster.nodes, start=1)
                     if i != victim]
        watch = AckWatch(survivors, moved, killed_at)
        try:
            wait_for(watch.done, 10 * SESSION_TIMEOUT,
                     "a partition of the dead leader never acknowledged again")
        finally:
            watch.stop()
        recovery = max(watch.first_ack.values())
        time.sleep(2)
        cluster.start_node(victim)  # back on its ports and data
        # It catches up, then takes its leaderships back: a second, clean move.
        cluster.wait_in_sync(topics, timeout=60, preferred_leaders=True)
        time.sleep(2)
        finish(conn, exchange)

        generated = sent(exchange)
        kafka, dead = landed(conn, cluster.bootstrap_servers.split(","))
        total = {s: sum(len(v) for v in generated[s].values()) for s in STREAMS}
        got = {s: sum(len(v) for v in kafka[s].values()) for s in STREAMS}
        unique = {s: sum(len(set(v)) for v in kafka[s].values()) for s in STREAMS}
        lost = {s: sum(len(set(generated[s][k]) - set(kafka[s][k])) for k in generated[s])
                for s in STREAMS}
        for stream, kind in (("publicTrade", "trades"), ("orderbook.50", "book updates")):
            record_outcome.append(Outcome(
                fault=f"partition leader kill -9 (3 nodes, RF 3) {kind} [{client}]",
                generated=total[stream], landed=unique[stream], dead_lettered=dead,
                counted=int(conn.dropped), duplicated=got[stream] - unique[stream],
                lost=lost[stream], recovery_seconds=recovery))
        for stream in STREAMS:
            assert total[stream] > 0, stream
            assert lost[stream] == 0 and got[stream] == unique[stream], (stream, lost, got)
            for symbol, ids in generated[stream].items():
                assert kafka[stream][symbol] == ids, f"{stream} {symbol}: not in sent order"
        assert dead == 0 and conn.dropped == 0
        assert recovery < 5 * SESSION_TIMEOUT, watch.first_ack
