"""The shards this replica streams: their subscriptions and connections.

``ShardRunner`` is told which shards the group gave this replica
(``assign``/``revoke``, from ``connector.scaleout.coordinator``'s rebalance listener)
and brings the running connections to match (``apply``, using
``shards.diff``): a new shard's de-duplicated records are held (``hold``),
its connections are built and started at once, and only then is it seeded
(``on_shards_assigned``, reading the Kafka tail while the connections
subscribe) and its held records released (``release``): seeding never delays
subscribing, and the overlap with the previous owner is dropped by id. A
revoked shard's connections are stopped and Kafka flushed before the listener
returns, so the next owner finds every record of ours in Kafka. Shards that
do not move are never touched.

It also keeps the per-replica metrics true to what this replica streams:
``shards_owned``, ``subscriptions_configured`` and ``last_message_age`` follow
the owned shards, a moved shard's ``connection_up`` child is removed (no
"connection down" alert for a connection that now lives elsewhere), and
``shard_handover_seconds`` is observed at a new shard's first data.

Thread-safe: the listener (kafka-python's I/O thread) and the shard-starter
thread both call in; seeding runs outside the lock so a revoke never waits
for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.ops import metrics
from connector.scaleout import shards

log = logging.getLogger(__name__)

FLUSH_ON_REVOKE_SECONDS = 3.0  # bounded: the listener holds up the group's heartbeat
STOP_SECONDS = 3.0
SEED_ON_STOP_SECONDS = 12.0  # a seed's own bound (10 s) and a little
GAP_WARN_SECONDS = 1.0  # a hand-over gap this long is logged as a warning


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
# Called with new shards' subscriptions once their connections have started; may
# return per symbol the Kafka timestamp (ms) of the previous writer's newest record.
OnShardsAssigned = Callable[[list[Any]], Mapping[str, int] | None]
# Hold (before start) and release (after the seed) a shard's de-duplicated records.
HoldRecords = Callable[[list[Any]], object]


def _nothing(_subs: list[Any]) -> None:
    return None


@dataclass
class _Running:
    subscriptions: list[Any]
    assigned_at: float
    connections: list[ShardConnection] = field(default_factory=list)
    handed_over: bool = False
    first_data_ms: int | None = None  # wall clock, at the shard's first data here
    last_written_ms: int | None = None  # the previous writer's newest record (Kafka)
    gap_reported: bool = False
    leaving_at: float | None = None  # revoked: streams on until then (make-before-break)


class ShardRunner:
    """Runs the connections of the shards this replica owns.

    ``owned`` is what the group says; ``apply()`` brings the running shards
    to it (``shards.diff``). Thread-safe: the listener (revoke) and the
    coordinator thread (start) both call in.
    """

    def __init__(self, plan: Mapping[int, list[Any]], build: BuildConnections,
                 flush: Callable[[float], int], on_shards_assigned: OnShardsAssigned,
                 all_keys: Sequence[tuple[str, str, str]],
                 hold: HoldRecords = _nothing, release: HoldRecords = _nothing,
                 overlap: float = 0.0, seed_after: float = 0.0) -> None:
        self._plan = plan
        self._overlap = overlap
        self._seed_after = seed_after
        self._hold = hold
        self._release = release
        self._build = build
        self._flush = flush
        self._on_assigned = on_shards_assigned
        self._lock = threading.RLock()
        self._owned: set[int] = set()
        self._running: dict[int, _Running] = {}
        self._seeders: list[threading.Thread] = []
        self._stopping = threading.Event()  # stop_all: seed now, do not wait out seed_after
        self._topics = sorted({(k[0], k[1]) for k in all_keys})
        metrics.last_message_age.unregister(all_keys)  # registered again as shards come
        self._refresh_metrics()

    @property
    def owned(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._owned)

    def assign(self, added: set[int]) -> None:
        """The group gave us ``added``; ``apply()`` starts them (a shard still
        leaving us simply stays)."""
        with self._lock:
            self._owned |= added
            for shard in added:
                run = self._running.get(shard)
                if run is not None:
                    run.leaving_at = None

    def revoke(self, revoked: set[int], linger: bool = True) -> None:
        """The group takes ``revoked`` away. Make-before-break: they stream on for
        ``overlap`` seconds, so the next owner subscribes before we let go, then
        stop and Kafka is flushed (the next owner seeds after that, ``seed_after``,
        and drops the overlap by id). Without ``overlap`` or ``linger`` (lost, not
        handed over): stopped and flushed now."""
        with self._lock:
            self._owned -= revoked
            moving = revoked & {s for s, r in self._running.items() if r.leaving_at is None}
            # Private shards too: the next owner holds their events and drops what we
            # wrote by identity (exec id, order id and updated time, wallet push).
            now = moving if not linger or self._overlap <= 0 else set()
            lingering = moving - now
            if lingering:
                deadline = time.monotonic() + self._overlap
                for shard in lingering:
                    self._running[shard].leaving_at = deadline
                timer = threading.Timer(self._overlap, self._finish_leaving)
                timer.daemon = True
                timer.start()
                log.info("handing over shards %s: streaming on for %.1f s so the next owner "
                         "subscribes first", sorted(lingering), self._overlap)
            self._release_held(now)
            stopped = self._stop_shards(now)
        if stopped:
            left = self._flush(FLUSH_ON_REVOKE_SECONDS)
            log.info("handed over shards %s (%d records still unacknowledged)",
                     sorted(stopped), left)

    def _finish_leaving(self) -> None:
        """The overlap is over: stop the shards handed over, flush."""
        with self._lock:
            now = time.monotonic()
            due = {s for s, r in self._running.items()
                   if r.leaving_at is not None and r.leaving_at <= now + 0.05}
            self._release_held(due)
            stopped = self._stop_shards(due)
        if stopped:
            left = self._flush(FLUSH_ON_REVOKE_SECONDS)
            log.info("handed over shards %s (%d records still unacknowledged)",
                     sorted(stopped), left)

    def apply(self) -> None:
        """Start what we own and do not run, stop what we run and do not own."""
        with self._lock:
            staying = {s: r for s, r in self._running.items() if r.leaving_at is None}
            change = shards.diff(staying, self._owned)
            if not change:
                return
            self._stop_shards(set(change.stop))
            now = time.monotonic()
            new = sorted(change.start)
            for shard in new:
                self._running[shard] = _Running(list(self._plan.get(shard, ())), now)
        subs = shards.subscriptions_of(self._plan, new)
        if subs:
            self._hold(subs)  # before the connections start: no record passes unseeded
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
        if not subs:
            return
        # On its own thread, while the connections subscribe: seeding waits for the
        # previous owner and reads Kafka; neither a revoke nor the next apply (nor
        # observe_handovers) waits for it.
        seeder = threading.Thread(target=self._seed, args=(new, subs), daemon=True,
                                  name=f"seed-{'-'.join(map(str, new))}")
        with self._lock:
            self._seeders = [t for t in self._seeders if t.is_alive()] + [seeder]
        seeder.start()

    def settle(self, timeout: float) -> bool:
        """Wait for the seeding of started shards (tests); True if all done."""
        deadline = time.monotonic() + timeout
        for t in list(self._seeders):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._seeders)

    def _seed(self, new: list[int], subs: list[Any]) -> None:
        if self._seed_after > 0:  # the previous owner streams on, then flushes
            self._stopping.wait(self._seed_after)
        last_written: Mapping[str, int] | None = None
        try:
            last_written = self._on_assigned(subs)
        except Exception:  # a failed seed costs duplicates, never the shard
            log.exception("on_shards_assigned failed for shards %s", new)
        finally:
            self._release(subs)
        if last_written:
            with self._lock:
                for shard in new:
                    run = self._running.get(shard)
                    if run is None:
                        continue
                    stamps = [last_written[s] for sub in run.subscriptions
                              for s in sub.symbols if s in last_written]
                    run.last_written_ms = max(stamps, default=None)
                    self._report_gap(shard, run)

    def stop_all(self) -> None:
        """Stop every shard and flush (after the group has been left: shards
        handed over stream on until their overlap ends)."""
        self._stopping.set()
        # Shards being seeded: let them finish, so what they hold is written through
        # the seed (written unseeded below only if a seed outlasts this).
        self.settle(SEED_ON_STOP_SECONDS)
        with self._lock:
            self._owned.clear()
            ends = [r.leaving_at for r in self._running.values() if r.leaving_at is not None]
        if ends:
            time.sleep(max(0.0, max(ends) - time.monotonic()))
        with self._lock:
            self._release_held(set(self._running))
            stopped = self._stop_shards(set(self._running))
        if stopped:
            self._flush(FLUSH_ON_REVOKE_SECONDS)

    def _release_held(self, victims: set[int]) -> None:
        """Shards we let go of before their seed finished: write what they hold
        now (at worst a duplicate, never a loss; caller holds the lock)."""
        subs = shards.subscriptions_of(self._plan, sorted(victims))
        if subs:
            self._release(subs)

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
                    run.first_data_ms = int(time.time() * 1000)
                    metrics.shard_handover_seconds.observe(since)
            for shard, run in self._running.items():
                self._report_gap(shard, run)

    def _report_gap(self, shard: int, run: _Running) -> None:
        """Once both ends are known: the seconds the shard went unwritten between
        the previous writer's newest record and our first data (caller holds the lock).
        Lost, for v5: Bybit sends no history on subscribe."""
        if run.gap_reported or run.first_data_ms is None or run.last_written_ms is None:
            return
        run.gap_reported = True
        gap = max(0.0, (run.first_data_ms - run.last_written_ms) / 1000.0)
        metrics.shard_gap_seconds_total.labels(str(shard)).inc(gap)
        log.log(logging.WARNING if gap >= GAP_WARN_SECONDS else logging.INFO,
                "shard %d: %.2f s unwritten between the previous writer's last record and "
                "ours (what Bybit sent meanwhile is lost)", shard, gap)

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
