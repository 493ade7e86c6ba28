"""Scale-out and fail-over on Kafka's consumer-group protocol.

Every replica with the same ``coordination.group`` joins one consumer group
on the coordination topic (``bybit.connector.coordination.<group>``, created at
start with ``shards`` partitions; no records are ever written to it). The
partitions the group assigns to a replica are the shards it streams (see
``connector.shards``). Kafka does the rest: a replica that joins, leaves
(SIGTERM) or dies (no heartbeat for ``session_timeout_seconds``) triggers a
rebalance and its shards move.

Assignment: kafka-python 3.x implements KIP-429 cooperative rebalancing
(``cooperative-sticky``), used here: in a rebalance only the shards that move
are revoked; every other shard keeps streaming, untouched. A moving shard is
revoked from its old owner in a first round and assigned to the new owner in
a second, so in the steady state a shard is streamed by exactly one replica.

Hand-over of one shard:

* old owner, in ``on_partitions_revoked`` (before the group moves on): stops
  the shard's connections (stop reading) and flushes Kafka, so everything it
  wrote is in Kafka before the new owner looks;
* new owner, on assignment: ``on_shards_assigned(subscriptions)`` (default:
  seed the trade de-dup from the topics' tail, ``connector.handover``), then
  builds and starts the shard's connections.

A replica killed without a goodbye is noticed after the session timeout; the
records it had not delivered are lost (counted by the test suite, limited to
that window). Bybit's trade replay on subscribe recovers the last 60 trades.

Threads: one coordinator thread owns the ``KafkaConsumer`` (poll, group
metadata, close). kafka-python calls the rebalance listener on the
consumer's I/O thread, which also heartbeats: the listener only stops
connections (bounded) and flushes (bounded); the slow part of a start
(seeding, connecting) runs on the coordinator thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import MemberState

from connector import handover, metrics, shards
from connector.config import Config, CoordinationConfig, KafkaConfig
from connector.errors import ConfigError
from connector.sink import producer_settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
FLUSH_ON_REVOKE_SECONDS = 3.0  # bounded: the listener holds up the group's heartbeat
STOP_SECONDS = 3.0


class ShardConnection(Protocol):
    """What the runner needs of a connection (``bybit.connection.Connection``)."""

    name: str
    last_error: str | None

    @property
    def is_up(self) -> bool: ...

    @property
    def all_subscribed(self) -> bool: ...

    def start(self) -> Any: ...

    def stop(self, timeout: float = ...) -> None: ...

    def is_alive(self) -> bool: ...


# (shard, its subscriptions) -> its connections, built but not started.
BuildConnections = Callable[[int, list[Any]], Sequence[ShardConnection]]
# Called with a new shard's subscriptions before its connections start.
OnShardsAssigned = Callable[[list[Any]], None]


@dataclass
class _Running:
    subscriptions: list[Any]
    assigned_at: float
    connections: list[ShardConnection] = field(default_factory=list)
    handed_over: bool = False


class ShardRunner:
    """Runs the connections of the shards this replica owns.

    ``owned`` is what the group says; ``apply()`` brings the running shards
    to it (``shards.diff``). Thread-safe: the listener (revoke) and the
    coordinator thread (start) both call in.
    """

    def __init__(self, plan: Mapping[int, list[Any]], build: BuildConnections,
                 flush: Callable[[float], int], on_shards_assigned: OnShardsAssigned,
                 all_keys: Sequence[tuple[str, str, str]]) -> None:
        self._plan = plan
        self._build = build
        self._flush = flush
        self._on_assigned = on_shards_assigned
        self._lock = threading.RLock()
        self._owned: set[int] = set()
        self._running: dict[int, _Running] = {}
        self._topics = sorted({(k[0], k[1]) for k in all_keys})
        metrics.last_message_age.unregister(all_keys)  # registered again as shards come
        self._refresh_metrics()

    @property
    def owned(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._owned)

    def assign(self, added: set[int]) -> None:
        """The group gave us ``added``; ``apply()`` starts them."""
        with self._lock:
            self._owned |= added

    def revoke(self, revoked: set[int]) -> None:
        """The group takes ``revoked`` away: stop them now, then flush Kafka so the
        next owner finds every record of ours there when it seeds."""
        with self._lock:
            self._owned -= revoked
            stopped = self._stop_shards(revoked & set(self._running))
        if stopped:
            left = self._flush(FLUSH_ON_REVOKE_SECONDS)
            log.info("handed over shards %s (%d records still unacknowledged)",
                     sorted(stopped), left)

    def apply(self) -> None:
        """Start what we own and do not run, stop what we run and do not own."""
        with self._lock:
            change = shards.diff(self._running, self._owned)
            if not change:
                return
            self._stop_shards(set(change.stop))
            now = time.monotonic()
            new = sorted(change.start)
            for shard in new:
                self._running[shard] = _Running(list(self._plan.get(shard, ())), now)
        subs = shards.subscriptions_of(self._plan, new)
        # Outside the lock: seeding reads Kafka, and a revoke must not wait for it.
        if subs:
            try:
                self._on_assigned(subs)
            except Exception:  # a failed seed costs duplicates, never the shard
                log.exception("on_shards_assigned failed for shards %s", new)
        with self._lock:
            started = []
            for shard in new:
                run = self._running.get(shard)
                if run is None or shard not in self._owned or run.connections:
                    continue  # revoked meanwhile
                run.connections = list(self._build(shard, run.subscriptions))
                for conn in run.connections:
                    conn.start()
                started.append(shard)
            self._refresh_metrics()
        if started:
            log.info("streaming shards %s (%d subscriptions); now own %s", started,
                     len(shards.keys_of(subs)), sorted(self.owned))

    def stop_all(self) -> None:
        """Stop every shard and flush, before leaving the group."""
        with self._lock:
            self._owned.clear()
            stopped = self._stop_shards(set(self._running))
        if stopped:
            self._flush(FLUSH_ON_REVOKE_SECONDS)

    def _stop_shards(self, victims: set[int]) -> set[int]:
        """Stop the connections of ``victims`` in parallel (caller holds the lock)."""
        conns = [c for s in victims for c in self._running[s].connections]
        threads = [threading.Thread(target=c.stop, args=(STOP_SECONDS,), name=f"stop-{c.name}")
                   for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(STOP_SECONDS + 1)
        for shard in victims:
            run = self._running.pop(shard)
            metrics.last_message_age.unregister(shards.keys_of(run.subscriptions))
        for conn in conns:
            _forget_connection_metrics(conn)
        self._refresh_metrics()
        return victims

    def _refresh_metrics(self) -> None:
        with self._lock:
            subs = shards.subscriptions_of(self._plan, self._running)
            metrics.shards_owned.set(len(self._running))
        keys = shards.keys_of(subs)
        metrics.last_message_age.register(keys)
        counts: dict[tuple[str, str], int] = {}
        for stream, topic_id, _ in keys:
            counts[(stream, topic_id)] = counts.get((stream, topic_id), 0) + 1
        for stream, topic_id in self._topics:
            metrics.subscriptions_configured.labels(stream, topic_id).set(
                counts.get((stream, topic_id), 0))

    def observe_handovers(self) -> None:
        """A shard is handed over at its first data frame (private: authenticated)."""
        now = time.monotonic()
        with self._lock:
            for run in self._running.values():
                if run.handed_over or not run.connections:
                    continue  # not started yet, or an empty shard
                since = now - run.assigned_at
                keys = [k for k in shards.keys_of(run.subscriptions)
                        if k[0] not in shards.PRIVATE_STREAMS]
                if keys:
                    ages = (metrics.last_message_age.age(*k) for k in keys)
                    done = any(a is not None and a < since for a in ages)
                else:
                    done = all(c.is_up and c.all_subscribed for c in run.connections)
                if done:
                    run.handed_over = True
                    metrics.shard_handover_seconds.observe(since)

    def connections(self) -> list[ShardConnection]:
        with self._lock:
            return [c for run in self._running.values() for c in run.connections]

    def status(self) -> dict[str, Any]:
        with self._lock:
            out = {}
            for shard in sorted(self._owned | set(self._running)):
                run = self._running.get(shard)
                conns = run.connections if run else []
                streaming = run is not None and (not run.subscriptions or (bool(conns) and all(
                    c.is_up and c.all_subscribed for c in conns)))
                out[str(shard)] = {
                    "subscriptions": len(shards.keys_of(run.subscriptions)) if run else 0,
                    "streaming": streaming,
                }
            return out


def _forget_connection_metrics(conn: Any) -> None:
    """A stopped shard's connection is gone from this replica: drop its gauges so
    ``connection_up == 0`` does not alert about a connection that moved away."""
    stream = getattr(getattr(conn, "settings", None), "stream", None)
    for gauge in (metrics.connection_up, metrics.reconnect_backoff_seconds):
        try:
            gauge.remove(stream, conn.name)
        except KeyError:
            pass


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's I/O thread: must stay short (see module doc)."""

    def __init__(self, runner: ShardRunner, wake: threading.Event) -> None:
        self._runner = runner
        self._wake = wake

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._runner.revoke({tp.partition for tp in revoked})

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # Our membership expired: the shards are someone else's already.
        self._runner.revoke({tp.partition for tp in lost})

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runner.assign({tp.partition for tp in assigned})
        self._wake.set()


def ensure_coordination_topic(kafka: KafkaConfig, topic: str, partitions: int) -> None:
    """Create the coordination topic with ``partitions`` partitions if missing.

    Raises ``ConfigError`` if it exists with another partition count: the
    shard plan would not match the group's partitions.
    """
    from kafka.admin import KafkaAdminClient, NewTopic

    settings = {k: v for k, v in producer_settings(kafka).items()
                if k in KafkaAdminClient.DEFAULT_CONFIG}
    admin = KafkaAdminClient(**settings)
    try:
        if topic not in set(admin.list_topics()):
            try:
                admin.create_topics([NewTopic(topic, partitions, -1)])
                log.info("created the coordination topic %s (%d partitions)", topic, partitions)
            except TopicAlreadyExistsError:
                pass  # another replica was first
        found = len(_partitions(admin, topic))
        if found != partitions:
            raise ConfigError("coordination.shards",
                              f"the coordination topic {topic!r} has {found} partitions, "
                              f"not {partitions}",
                              "changing the shard count needs a new coordination.group")
    finally:
        admin.close()


def _partitions(admin: Any, topic: str) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:  # a topic just created may not be in the metadata yet
        described = admin.describe_topics([topic])
        parts = described[0].get("partitions") or [] if described else []
        if parts or time.monotonic() > deadline:
            return list(parts)
        time.sleep(0.2)


class Coordinator:
    """Group membership → owned shards, on its own thread (``start``/``stop``)."""

    def __init__(self, coordination: CoordinationConfig, kafka: KafkaConfig,
                 runner: ShardRunner) -> None:
        self.config = coordination
        self.topic = coordination.coordination_topic
        self._kafka = kafka
        self.runner = runner
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordinator")
        self._meta: Any = None
        self._generation = -1
        self.last_error: str | None = None

    def start(self) -> Coordinator:
        ensure_coordination_topic(self._kafka, self.topic, self.config.shards)
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop streaming, flush, leave the group (the others take over at once)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("coordinator did not stop within %.1f s", timeout)

    def _consumer(self) -> KafkaConsumer:
        c = self.config
        settings = {k: v for k, v in producer_settings(self._kafka).items()
                    if k in KafkaConsumer.DEFAULT_CONFIG and k != "client_id"}
        session_ms = int(c.session_timeout_seconds * 1000)
        return KafkaConsumer(
            **settings, group_id=c.group, client_id="bybit-kafka-connector-coordination",
            enable_auto_commit=False, auto_offset_reset="latest",
            partition_assignment_strategy=[CooperativeStickyAssignor],
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=int(c.heartbeat_interval_seconds * 1000),
            # Also the rebalance timeout: how long a rebalance waits for a member.
            # Our loop polls every POLL_SECONDS; a start takes a few seconds at most.
            max_poll_interval_ms=max(session_ms, 15_000))

    def _run(self) -> None:
        """The poll loop: heartbeats and rebalances only, never held up by a start."""
        consumer: KafkaConsumer | None = None
        starter = threading.Thread(target=self._start_shards, name="shard-starter")
        try:
            while consumer is None and not self._stop.is_set():
                try:
                    consumer = self._consumer()
                except KafkaError as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("coordination: cannot reach Kafka (%s); retrying", exc)
                    self._stop.wait(2.0)
            if consumer is None:
                return
            consumer.subscribe([self.topic], listener=_Listener(self.runner, self._wake))
            log.info("joining group %s on %s (%d shards)", self.config.group, self.topic,
                     self.config.shards)
            starter.start()
            while not self._stop.is_set():
                try:
                    consumer.poll(timeout_ms=int(POLL_SECONDS * 1000), max_records=1)
                    # The topic carries no records: never fetch, only keep the membership.
                    unpaused = consumer.assignment() - consumer.paused()
                    if unpaused:
                        consumer.pause(*unpaused)
                    self.last_error = None
                except KafkaError as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("coordination: %s", self.last_error)
                    self._stop.wait(1.0)
                self._observe(consumer)
        finally:
            self._wake.set()
            if starter.is_alive():
                starter.join(30)
            # Stop and flush before leaving, so the next owners find our records.
            self.runner.stop_all()
            if consumer is not None:
                try:
                    consumer.close()
                except KafkaError as exc:
                    log.warning("coordination: leaving the group: %s", exc)

    def _start_shards(self) -> None:
        """Seeding and connecting take seconds: done here, off the poll loop, so a
        follow-up rebalance round never waits for them."""
        while not self._stop.is_set():
            woken = self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            if woken:
                self.runner.apply()
            self.runner.observe_handovers()

    def _observe(self, consumer: KafkaConsumer) -> None:
        meta = consumer.group_metadata()
        self._meta = meta
        if meta.state == MemberState.STABLE and meta.generation_id != self._generation:
            self._generation = meta.generation_id
            metrics.rebalances_total.inc()
            log.info("group %s generation %d: own shards %s", self.config.group,
                     meta.generation_id, sorted(self.runner.owned))

    def status(self) -> dict[str, Any]:
        """For /readyz: ready when the group is stable and every owned shard streams
        (a replica that owns no shard is a ready standby)."""
        meta = self._meta
        stable = meta is not None and meta.state == MemberState.STABLE
        shard_status = self.runner.status()
        owned = sorted(self.runner.owned)
        ready = (stable and self.is_alive()
                 and all(shard_status.get(str(s), {}).get("streaming") for s in owned))
        body: dict[str, Any] = {
            "ready": ready, "group": self.config.group, "topic": self.topic,
            "state": "stable" if stable else "joining",
            "generation": meta.generation_id if meta is not None else -1,
            "shards_owned": owned, "shards": shard_status}
        if self.last_error:
            body["last_error"] = self.last_error
        return body


def start(config: Config, routes: Mapping[tuple[str, str], Any], sink: Any,
          build: Callable[[Config, str], Sequence[ShardConnection]]) -> Coordinator:
    """Start scale-out for ``config`` (whose ``coordination`` is set).

    ``build(config, name_suffix)`` is the service's connection factory: the
    connections of ``config.subscriptions``, not started, their names ending
    in ``name_suffix`` (``.s<shard>``, unique in metrics and /readyz).
    ``sink.flush`` is called on hand-over; ``routes`` are seeded on assignment.
    """
    coord = config.coordination
    assert coord is not None

    def build_shard(shard: int, subs: list[Any]) -> Sequence[ShardConnection]:
        return build(dataclasses.replace(config, subscriptions=subs), f".s{shard}")

    def on_shards_assigned(subs: list[Any]) -> None:
        handover.seed_trade_dedup(config, routes, subs)

    runner = ShardRunner(shards.plan(config.subscriptions, coord.shards), build_shard,
                         sink.flush, on_shards_assigned, shards.keys_of(config.subscriptions))
    return Coordinator(coord, config.kafka, runner).start()
