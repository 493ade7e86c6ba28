"""Scale-out and fail-over on Kafka's consumer-group protocol.

Every replica with the same ``coordination.group`` joins one consumer group
on the coordination topic (``bybit.connector.coordination.<group>``, created at
start with ``shards`` partitions; no records are ever written to it). The
partitions the group assigns to a replica are the shards it streams (see
``connector.scaleout.shards``). Kafka does the rest: a replica that joins, leaves
(SIGTERM) or dies (no heartbeat for ``session_timeout_seconds``) triggers a
rebalance and its shards move.

Assignment: kafka-python 3.x implements KIP-429 cooperative rebalancing
(``cooperative-sticky``), used here: in a rebalance only the shards that move
are revoked; every other shard keeps streaming, untouched. A moving shard is
revoked from its old owner in a first round and assigned to the new owner in
a second, so in the steady state a shard is streamed by exactly one replica.

Hand-over of one shard (make-before-break):

* old owner, in ``on_partitions_revoked`` (before the group moves on): keeps
  streaming the shard for ``HANDOVER_OVERLAP_SECONDS`` so the new owner is
  subscribed first, then stops its connections and flushes Kafka; on SIGTERM
  it leaves the group first and does the same;
* new owner, on assignment: holds the shard's trade and book records, builds
  and starts the shard's connections at once, and ``SEED_AFTER_SECONDS``
  later (the old owner stopped and flushed) seeds the trade de-dup from the
  topics' tail (``connector.scaleout.handover``) and releases what it held through it
  (``connector.pipeline.hold``): the overlap is dropped by id, its book chain starts
  with its snapshot after the old owner's last record. Seeding never delays
  subscribing.

A replica killed without a goodbye is noticed after the session timeout; what
Bybit sent meanwhile is lost (v5 sends no history; v1 replays 60 trades) and
the new owner reports the gap per shard (``bybit_connector_shard_gap_seconds_total``).

Threads: one coordinator thread owns the ``KafkaConsumer`` (poll, group
metadata, close). kafka-python calls the rebalance listener on the
consumer's I/O thread, which also heartbeats: the listener only stops
connections (bounded) and flushes (bounded); the slow part of a start
(seeding, connecting) runs on a "shard-starter" thread, so the poll loop is
always ready for the next rebalance round. ``connector.scaleout.runner`` keeps
the running shards and their connections.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import InvalidSessionTimeoutError, KafkaError, TopicAlreadyExistsError
from kafka.structs import MemberState

from connector.config.model import Config, CoordinationConfig, KafkaConfig
from connector.errors import ConfigError, ConnectorError
from connector.ops import metrics
from connector.scaleout import handover, shards, standby
from connector.scaleout.runner import (
    FLUSH_ON_REVOKE_SECONDS,
    STOP_SECONDS,
    ShardConnection,
    ShardRunner,
)
from connector.sink.admin import new_topic, producer_settings, refused_topic_settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
# A shard handed over streams on this long on its old owner, so the new owner is
# subscribed before it lets go (a rebalance and a subscribe take ~1.2 s here).
HANDOVER_OVERLAP_SECONDS = 3.0
# The new owner reads the Kafka tail after the old owner's overlap, its connections'
# stop and its flush, each bounded (runner.STOP_SECONDS, runner.FLUSH_ON_REVOKE_SECONDS):
# reading it before the old owner's last records land writes those trades twice
# (seen on a loaded machine with the flush left out of this sum).
SEED_AFTER_SECONDS = HANDOVER_OVERLAP_SECONDS + STOP_SECONDS + FLUSH_ON_REVOKE_SECONDS + 1.0
SEED_DEPTH = 500  # trade ids read back per symbol: the overlap and a replay
# A standby writes for a vanished owner after the owner's possible overlap, stop and
# flush (a SIGTERM looks like a crash from the group); the new owner seeds after it.
TAKEOVER_AFTER_SECONDS = SEED_AFTER_SECONDS
SEED_AFTER_STANDBY_SECONDS = (SEED_AFTER_SECONDS + TAKEOVER_AFTER_SECONDS
                              + 2 * standby.POLL_SECONDS + STOP_SECONDS + standby.WRITE_SECONDS)


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's I/O thread: must stay short (see module doc)."""

    def __init__(self, runner: ShardRunner, wake: threading.Event) -> None:
        self._runner = runner
        self._wake = wake

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._runner.revoke({tp.partition for tp in revoked})

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # Our membership expired: the shards are someone else's already.
        self._runner.revoke({tp.partition for tp in lost}, linger=False)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runner.assign({tp.partition for tp in assigned})
        self._wake.set()


def ensure_coordination_topic(kafka: KafkaConfig, topic: str, partitions: int) -> None:
    """Create the coordination topic with ``partitions`` partitions if missing
    (unless ``kafka.create_topics`` is off).

    Raises ``ConfigError`` if it is missing and may not be created, or exists
    with another partition count (the shard plan would not match the group's
    partitions); ``ConnectorError`` if Kafka cannot be asked (the process
    exits and is restarted: without the group it must not stream anything).
    """
    from kafka.admin import KafkaAdminClient

    settings = {k: v for k, v in producer_settings(kafka).items()
                if k in KafkaAdminClient.DEFAULT_CONFIG}
    try:
        admin = KafkaAdminClient(**settings)
    except KafkaError as exc:
        raise ConnectorError(f"cannot reach Kafka to check the coordination topic: {exc}") \
            from exc
    try:
        if topic not in set(admin.list_topics()):
            if not kafka.create_topics:
                raise ConfigError("coordination.topic", f"{topic!r} does not exist and "
                                  "kafka.create_topics is off",
                                  f"create it with {partitions} partitions")
            try:
                admin.create_topics({topic: new_topic(kafka, partitions)})
                log.info("created the coordination topic %s (%d partitions)", topic, partitions)
            except TopicAlreadyExistsError:
                pass  # another replica was first
            except KafkaError as exc:
                refused = refused_topic_settings(exc, [topic])
                if refused is not None:
                    raise refused from exc
                raise
        found = len(_partitions(admin, topic))
        if found != partitions:
            raise ConfigError("coordination.shards",
                              f"the coordination topic {topic!r} has {found} partitions, "
                              f"not {partitions}",
                              "changing the shard count needs a new coordination.group")
    except KafkaError as exc:
        raise ConnectorError(f"cannot check the coordination topic {topic!r}: {exc}") from exc
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
        self.standby: standby.Standby | None = None
        self._admin: Any = None

    def start(self) -> Coordinator:
        ensure_coordination_topic(self._kafka, self.topic, self.config.shards)
        self._thread.start()
        if self.standby is not None:
            self.standby.start()
        return self

    def member_id(self) -> str | None:
        """This replica's member id in the group, once a generation is stable."""
        meta = self._meta
        if meta is None or meta.state != MemberState.STABLE:
            return None
        return str(meta.member_id)

    def describe_group(self) -> Any:
        """The group as the broker describes it (members and their shards), or None
        if Kafka cannot be asked now (the standby's view of the membership)."""
        from kafka.admin import KafkaAdminClient

        try:
            if self._admin is None:
                settings = {k: v for k, v in producer_settings(self._kafka).items()
                            if k in KafkaAdminClient.DEFAULT_CONFIG}
                self._admin = KafkaAdminClient(**settings)
            return self._admin.describe_groups([self.config.group]).get(self.config.group)
        except KafkaError as exc:
            log.warning("standby: cannot describe group %s: %s", self.config.group, exc)
            return None

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop streaming, flush, leave the group (the others take over at once)."""
        if self.standby is not None:
            self.standby.stop()
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
                    error = self._explain(exc)
                    if error != self.last_error:
                        log.log(logging.ERROR if isinstance(exc, InvalidSessionTimeoutError)
                                else logging.WARNING, "coordination: %s", error)
                    self.last_error = error
                    self._stop.wait(1.0)
                self._observe(consumer)
        finally:
            self._wake.set()
            if starter.is_alive():
                starter.join(30)
            # Make-before-break: leave the group first (our shards are revoked and
            # stream on for HANDOVER_OVERLAP_SECONDS while the others subscribe), then
            # stop and flush, so the next owners find our records when they seed.
            if consumer is not None:
                try:
                    consumer.close()
                except KafkaError as exc:
                    log.warning("coordination: leaving the group: %s", exc)
            self.runner.stop_all()

    def _explain(self, exc: KafkaError) -> str:
        """The error for logs and /readyz; a session timeout the broker refuses names
        the setting and the broker's bounds (the crash detection time is bounded by them)."""
        if isinstance(exc, InvalidSessionTimeoutError):
            return (f"the broker refuses coordination.session_timeout_seconds "
                    f"{self.config.session_timeout_seconds:g}: it must lie within the "
                    "broker's group.min.session.timeout.ms and group.max.session.timeout.ms "
                    "(6 s and 30 min by default)")
        return f"{type(exc).__name__}: {exc}"

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
        if self.standby is not None:
            body["standby"] = self.standby.status()
        if self.last_error:
            body["last_error"] = self.last_error
        return body


def start(config: Config, routes: Mapping[tuple[str, str], Any], sink: Any,
          build: Callable[..., Sequence[ShardConnection]], pipeline: Any = None) -> Coordinator:
    """Start scale-out for ``config`` (whose ``coordination`` is set).

    ``build(config, name_suffix, on_event=None)`` is the service's connection
    factory: the connections of ``config.subscriptions``, not started, their
    names ending in ``name_suffix`` (``.s<shard>``, unique in metrics and
    /readyz), handing their events to ``on_event`` (default: the pipeline).
    ``sink.flush`` is called on hand-over; ``routes`` are seeded on assignment;
    ``pipeline`` writes what a standby kept (``coordination.standby``).
    """
    coord = config.coordination
    assert coord is not None
    plan = shards.plan(config.subscriptions, coord.shards)

    def build_shard(shard: int, subs: list[Any]) -> Sequence[ShardConnection]:
        return build(dataclasses.replace(config, subscriptions=subs), f".s{shard}")

    def on_shards_assigned(subs: list[Any]) -> dict[str, int]:
        last_written: dict[str, int] = {}
        handover.seed_trade_dedup(config, routes, subs, per_symbol=SEED_DEPTH, timeout=10.0,
                                  last_written=last_written)
        return last_written

    with_standby = coord.standby > 0 and pipeline is not None
    runner = ShardRunner(plan, build_shard,
                         sink.flush, on_shards_assigned, shards.keys_of(config.subscriptions),
                         hold=lambda subs: handover.hold(routes, subs),
                         release=lambda subs: handover.release(routes, subs),
                         overlap=HANDOVER_OVERLAP_SECONDS,
                         seed_after=SEED_AFTER_STANDBY_SECONDS if with_standby
                         else SEED_AFTER_SECONDS)
    coordinator = Coordinator(coord, config.kafka, runner)
    if with_standby:
        def build_shadow(shard: int, subs: list[Any],
                         on_event: Callable[[Any], None]) -> Sequence[Any]:
            return build(dataclasses.replace(config, subscriptions=subs),
                         f".standby.s{shard}", on_event)

        def take_over(shard: int, subs: list[Any], frames: list[Any]) -> int:
            """Write what the standby kept that Kafka lacks (see ``connector.scaleout.standby``)."""
            written_until: dict[str, int] = {}
            handover.seed_trade_dedup(config, routes, subs, per_symbol=SEED_DEPTH,
                                      timeout=standby.WRITE_SECONDS / 2,
                                      last_written=written_until)
            ours = shard in runner.owned  # our own snapshot restarts its books
            ends = {} if ours else handover.last_book_updates(
                config, routes, subs, timeout=standby.WRITE_SECONDS / 2)
            todo, starts = standby.select(frames, pipeline.route_of, ends, books=not ours,
                                          written_until=written_until)
            for (topic_id, symbol), u in starts.items():
                pipeline.continue_book(topic_id, symbol, u)
            for event in todo:
                pipeline.handle(event, archive=False)
            sink.flush(standby.WRITE_SECONDS / 4)
            return len(todo)

        coordinator.standby = standby.Standby(
            coord.group, coord.coordination_topic, plan, coordinator.describe_group,
            coordinator.member_id, build_shadow, take_over, coord.standby_buffer_seconds,
            coord.standby_buffer_bytes, TAKEOVER_AFTER_SECONDS)
    return coordinator.start()
