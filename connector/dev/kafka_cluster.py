"""A real multi-node Apache Kafka cluster (KRaft) for tests: nodes that can die.

Production Kafka has three or more brokers and replicates each partition; a
single test broker cannot lose a partition leader while the others carry on.
``KafkaCluster`` runs ``nodes`` combined broker+controller processes (each a
``KafkaBroker`` from ``kafka_broker.py`` on its own free 127.0.0.1 ports and
storage), formatted with one cluster id and a quorum of every node's
controller, all started at once (no node is ready before a quorum runs).
Killing one node leaves a majority: a new controller and new partition
leaders are elected, and the cluster keeps accepting ``acks=all`` writes
while ``min.insync.replicas`` replicas remain in sync.

The timeouts that decide how fast a dead node is noticed are lowered from
Kafka's defaults (a broker is fenced 3 s after its last heartbeat instead of
9 s; a controller quorum elects within about 1 s), so a failover takes
seconds, not tens of seconds. Topics are never created implicitly: whoever
writes creates them, with the replication it wants.

CLI: ``python -m connector.dev.kafka_cluster run [--nodes 3]``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from connector.dev.kafka_broker import KAFKA_VERSION, KafkaBroker, new_cluster_id

log = logging.getLogger(__name__)

# Quick failure detection and elections (Kafka's defaults in brackets).
FAILOVER_PROPERTIES = {
    "broker.heartbeat.interval.ms": "500",  # [2000]
    "broker.session.timeout.ms": "3000",  # [9000] a silent broker is fenced after this
    "controller.quorum.fetch.timeout.ms": "1000",  # [2000] a silent active controller
    "controller.quorum.election.timeout.ms": "500",  # [1000]
    "controller.quorum.election.backoff.max.ms": "300",  # [1000]
    "replica.lag.time.max.ms": "5000",  # [30000] a stuck follower leaves the ISR
    # A node that comes back gets its preferred leaderships back soon, as it would
    # after [300] s in production: the test sees that second move too.
    "leader.imbalance.check.interval.seconds": "5",
}


# C1 only: three JVMs starting at once on a small machine spend most of their start
# in the optimising compiler (measured on 2 busy cores: 35 s without, 12 s with).
# A test cluster's few thousand records a second never need C2's code.
NODE_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1",)


class ClusterNode(KafkaBroker):
    """One node of a ``KafkaCluster``: a ``KafkaBroker`` whose JVM starts quickly."""

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        java, *rest = super()._java_cmd(main, *args)
        return [java, *NODE_JVM_OPTIONS, *rest]


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition as the cluster's metadata describes it."""

    topic: str
    partition: int
    leader: int  # node id, -1 while no leader is elected
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class KafkaCluster:
    """``nodes`` KRaft broker+controller processes forming one cluster (a context manager).

    ``bootstrap_servers`` lists every node. ``kill(node_id)`` is a crash
    (SIGKILL, data kept); ``start_node(node_id)`` brings it back on the same
    ports and data. Node ids are 1..``nodes``. Internal topics (offsets,
    transactions) are replicated to ``min(3, nodes)`` nodes with
    ``min.insync.replicas`` one less.
    """

    def __init__(self, nodes: int = 3, start_timeout: float = 180.0,
                 extra_properties: dict[str, str] | None = None) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.nodes: list[KafkaBroker] = [ClusterNode(start_timeout=start_timeout)
                                         for _ in range(nodes)]
        replication = str(min(3, nodes))
        min_isr = str(max(1, min(3, nodes) - 1))
        voters = ",".join(f"{i}@127.0.0.1:{n.controller_port}"
                          for i, n in enumerate(self.nodes, start=1))
        cluster_id = new_cluster_id()
        for node_id, node in enumerate(self.nodes, start=1):
            node.cluster_id = cluster_id
            # Written after the single-node settings, so these win.
            node.extra_properties = {
                "node.id": str(node_id),
                "controller.quorum.voters": voters,
                "auto.create.topics.enable": "false",
                "offsets.topic.replication.factor": replication,
                "transaction.state.log.replication.factor": replication,
                "transaction.state.log.min.isr": min_isr,
                "share.coordinator.state.topic.replication.factor": replication,
                "share.coordinator.state.topic.min.isr": min_isr,
                **FAILOVER_PROPERTIES,
                **(extra_properties or {}),
            }
        self.cluster_id = cluster_id
        self.start_seconds: float | None = None
        self.down: set[int] = set()  # node ids killed and not started again

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap_servers for n in self.nodes)

    def node(self, node_id: int) -> KafkaBroker:
        return self.nodes[node_id - 1]

    def start(self) -> KafkaCluster:
        """Start every node in parallel (none is ready before a quorum runs); wait for all.

        On any failure every node is stopped and the first error raised.
        """
        started = time.monotonic()
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="kafka-node") as pool:
            futures = [pool.submit(n.start) for n in self.nodes]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            self.stop()
            raise failed[0]
        self.start_seconds = time.monotonic() - started
        log.info("Kafka %s cluster of %d nodes ready at %s in %.1f s", KAFKA_VERSION,
                 len(self.nodes), self.bootstrap_servers, self.start_seconds)
        return self

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, keeping its data (a crash)."""
        self.node(node_id).kill()
        self.down.add(node_id)

    def start_node(self, node_id: int) -> float:
        """Start a stopped node on its ports and data; the seconds until it answered."""
        node = self.node(node_id)
        node.start()
        self.down.discard(node_id)
        return node.start_seconds or 0.0

    def partitions(self, topics: Iterable[str]) -> list[PartitionState]:
        """Leader, replicas and in-sync replicas of every partition of ``topics``,
        as any live node reports them (raises ``KafkaError`` if none answers)."""
        from kafka import KafkaAdminClient

        live = [n.bootstrap_servers for i, n in enumerate(self.nodes, start=1)
                if i not in self.down]
        admin = KafkaAdminClient(bootstrap_servers=live, request_timeout_ms=5000)
        try:
            described = admin.describe_topics(list(topics))
        finally:
            admin.close()
        return [PartitionState(t["topic"] if "topic" in t else t["name"], p["partition_index"],
                               p["leader_id"], tuple(p["replica_nodes"]), tuple(p["isr_nodes"]))
                for t in described for p in t["partitions"]]

    def wait_in_sync(self, topics: Iterable[str], timeout: float = 60.0,
                     preferred_leaders: bool = False) -> float:
        """Wait until every partition of ``topics`` has a leader and all its replicas
        in sync (with ``preferred_leaders``, also led by its first replica again, as
        after a returning node took its leaderships back); returns the seconds
        waited (raises ``TimeoutError``)."""
        from kafka.errors import KafkaError

        topics = list(topics)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                states = self.partitions(topics)
            except (KafkaError, OSError):
                states = []
            if states and all(s.leader >= 0 and set(s.isr) == set(s.replicas)
                              and (not preferred_leaders or s.leader == s.replicas[0])
                              for s in states):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"partitions of {topics} not fully in sync within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop every node and delete its data. The nodes are killed, not shut down:
        their data goes anyway, and nodes shutting down together lose their
        controller quorum, so a clean shutdown waited out its 30 s timeout."""
        for node in self.nodes:
            node.kill()
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="kafka-stop") as pool:
            list(pool.map(lambda n: n.stop(), self.nodes))

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.dev.kafka_cluster",
                                     description="A local multi-node Kafka cluster (KRaft).")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a cluster until SIGINT/SIGTERM")
    run.add_argument("--nodes", type=int, default=3, help="broker+controller nodes (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cluster = KafkaCluster(nodes=args.nodes)
    try:
        cluster.start()
    except RuntimeError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    try:
        print(f"Kafka {KAFKA_VERSION} cluster of {args.nodes} nodes at "
              f"{cluster.bootstrap_servers} (started in {cluster.start_seconds:.1f} s)",
              flush=True)
        stop.wait()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
