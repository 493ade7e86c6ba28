"""Hot standby: a crash of a replica loses nothing a second replica received.

With ``coordination.standby: 1`` every shard is streamed twice: by its owner,
which writes it, and by a standby replica, which only keeps the last
``standby_buffer_seconds`` (and at most ``standby_buffer_bytes``) of its
frames in memory. When the owner dies, the group notices after the session
timeout and gives the shard to some replica, which subscribes afresh; v5 sends
no history, so what Bybit sent between the dead owner's last record and that
subscribe exists only in the standby's memory. The standby writes it.

Who stands by for whom is a deterministic function of the group's membership,
read by every replica from Kafka (``describe_groups`` on the coordination
group, every ``POLL_SECONDS``): the standby of shard ``s`` owned by member
``o`` is, among the other members, the one with the highest
``stable_hash(s/member)`` (rendezvous hashing: spread evenly, and a change of
membership moves only the shards it must). It is never the owner, and with one
replica there is none. Every replica computes the same answer from the same
stable generation, so standbys follow rebalances.

Take-over: a shard's owner left the group (its member is gone from a stable
generation). A planned leaver (SIGTERM) streams on for the hand-over overlap,
then stops and flushes; a crashed one wrote its last long ago. The two cannot
be told apart from the group, so the standby waits ``takeover_after`` seconds
(the overlap, a connection stop and a flush), stops its own connections of the
shard, reads the Kafka tail and writes what it kept that is not there: trades
and executions by id, orders by (order id, updated time), wallet rows by push,
books by ``u`` (a book continues at its last ``update_id`` in Kafka with the
kept delta ``u + 1``, or at a kept snapshot newer than that; a book the kept
frames cannot continue is left to the new owner's snapshot: never a splice).
Topics without an identity (tickers, kline, priceLimit) are not written again.
The new owner waits for this before it reads the tail itself
(``coordination``'s seed delay grows by ``takeover_after`` + the write), so it
drops by identity what the standby wrote. ``select`` is the pure core.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.bybit.events import V5Data
from connector.ops import metrics
from connector.scaleout import shards

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often the group's membership is read
# A kept frame received this long before the owner's newest record was written by it.
BEHIND_MS = 5000
WRITE_SECONDS = 4.0  # bound of a take-over's tail reads, writes and flush (budgeted)

# (shard, subscriptions, on_event) -> the shard's connections, built, not started.
BuildShadow = Callable[[int, list[Any], Callable[[Any], None]], Sequence[Any]]
# (shard, subscriptions, kept frames in arrival order) -> frames written again.
TakeOver = Callable[[int, list[Any], list[Any]], int]


def standby_of(shard: int, owner: str, members: Iterable[str]) -> str | None:
    """The member standing by for ``shard`` owned by ``owner``; None if alone."""
    others = [m for m in members if m != owner]
    if not others:
        return None
    return max(others, key=lambda m: (shards.stable_hash(f"{shard}/{m}"), m))


def membership(description: Mapping[str, Any], topic: str) -> tuple[bool, set[str],
                                                                     dict[int, str]]:
    """(stable?, member ids, shard -> owning member) from ``describe_groups``'s
    answer for one group."""
    stable = description.get("group_state") == "Stable" and not description.get("error")
    members: set[str] = set()
    owners: dict[int, str] = {}
    for member in description.get("members") or ():
        member_id = str(member.get("member_id"))
        members.add(member_id)
        assignment = member.get("member_assignment") or {}
        for part in assignment.get("assigned_partitions") or ():
            if part.get("topic") == topic:
                for shard in part.get("partitions") or ():
                    owners[int(shard)] = member_id
    return stable, members, owners


def select(events: Sequence[Any], route_of: Callable[[Any], Any],
           books_end: Mapping[tuple[str, str], int | None],
           books: bool = True, written_until: Mapping[str, int] | None = None,
           ) -> tuple[list[Any], dict[tuple[str, str], int | None]]:
    """What a standby writes of the frames it kept (pure).

    Returns the events to write in order, and per book where its chain resumes
    (``u`` to continue at, None: it starts at a kept snapshot). An event with
    an identity (its route de-duplicates) is kept: the seeded de-duplication
    drops what Kafka holds. A book frame is kept from the first that continues
    the book in Kafka (``books_end``): a delta with ``u == end + 1``, or a
    snapshot with ``u > end``; a book the frames cannot continue is left out,
    as are all books when ``books`` is False (the new owner is this replica).
    ``written_until``: per symbol, the Kafka time (ms) of the owner's newest
    record; a kept frame with an identity received more than
    ``BEHIND_MS`` before it was written by the owner (the owner writes a
    symbol in order), and may be older than the ids the seed read back.
    """
    until = written_until or {}
    out: list[Any] = []
    started: dict[tuple[str, str], int | None] = {}
    for event in events:
        route = route_of(event)
        if route is None:
            continue
        if not route.book:
            last = until.get(getattr(event, "symbol", ""))
            if route.dedup_field is not None and (
                    last is None or event.stamp.wall_ms >= last - BEHIND_MS):
                out.append(event)
            continue
        if not books or not isinstance(event, V5Data) or not event.items:
            continue
        key = (event.topic_id, event.symbol)
        if key not in started:
            u = event.items[0].get("u")
            end = books_end.get(key)
            if not isinstance(u, int):
                continue
            if event.type == "snapshot" and (end is None or u > end):
                started[key] = None
            elif event.type != "snapshot" and end is not None and u == end + 1:
                started[key] = end
            else:
                continue
        out.append(event)
    return out, started


class ShadowBuffer:
    """The last frames of one shard, bounded by age and by bytes (thread-safe:
    connection threads append)."""

    __slots__ = ("_bytes", "_frames", "_lock", "max_bytes", "seconds")

    def __init__(self, seconds: float, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._frames: collections.deque[tuple[float, int, Any]] = collections.deque()
        self._bytes = 0

    def append(self, event: Any) -> None:
        raw = getattr(event, "raw", b"")
        size = len(raw) + 200  # the decoded event costs about its frame, and some
        now = time.monotonic()
        with self._lock:
            self._frames.append((now, size, event))
            self._bytes += size
            frames = self._frames
            while frames and (self._bytes > self.max_bytes or frames[0][0] < now - self.seconds):
                self._bytes -= frames.popleft()[1]

    def drain(self) -> list[Any]:
        """Every kept frame, oldest first; the buffer is empty afterwards."""
        with self._lock:
            out = [e for _, _, e in self._frames]
            self._frames.clear()
            self._bytes = 0
        return out

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclass
class _Shadow:
    owner: str
    subscriptions: list[Any]
    buffer: ShadowBuffer
    connections: list[Any] = field(default_factory=list)
    gone_at: float | None = None  # monotonic: when the owner was found gone


class Standby:
    """Shadows the shards this replica stands by for (``start``/``stop``; one thread)."""

    def __init__(self, group: str, topic: str, plan: Mapping[int, list[Any]],
                 describe: Callable[[], Mapping[str, Any] | None],
                 member_id: Callable[[], str | None], build: BuildShadow,
                 take_over: TakeOver, seconds: float, max_bytes: int,
                 takeover_after: float) -> None:
        self._group = group
        self._topic = topic
        self._plan = plan
        self._describe = describe
        self._member_id = member_id
        self._build = build
        self._take_over = take_over
        self._seconds = seconds
        self._max_bytes = max_bytes
        self._takeover_after = takeover_after
        self._shadows: dict[int, _Shadow] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="standby")
        metrics.standby_shards.set(0)

    def start(self) -> Standby:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            victims = list(self._shadows)
        for shard in victims:
            self._drop(shard)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.tick()
            except Exception:  # a standby failing must never stop the owner's work
                log.exception("standby: reading the group failed")

    def tick(self) -> None:
        """Follow the group: take over shards whose owner is gone, shadow the
        shards this replica now stands by for, drop the others."""
        me = self._member_id()
        description = self._describe()
        if me is None or description is None:
            return
        stable, members, owners = membership(description, self._topic)
        if not stable or me not in members:
            return
        now = time.monotonic()
        for shard, shadow in list(self._shadows.items()):
            if shadow.owner not in members:
                if shadow.gone_at is None:
                    shadow.gone_at = now
                    log.info("standby: the owner of shard %d left the group; writing what "
                             "it had not written in %.1f s", shard, self._takeover_after)
                elif now - shadow.gone_at >= self._takeover_after:
                    self._write(shard, shadow)
                continue
            owner = owners.get(shard)
            if owner != shadow.owner or standby_of(shard, owner, members) != me:
                self._drop(shard)  # a planned move or a new member: someone else's now
        for shard, owner in sorted(owners.items()):
            if shard in self._shadows or owner == me or standby_of(shard, owner,
                                                                   members) != me:
                continue
            self._shadow(shard, owner)
        metrics.standby_shards.set(len(self._shadows))

    def _shadow(self, shard: int, owner: str) -> None:
        subs = list(self._plan.get(shard, ()))
        shadow = _Shadow(owner, subs, ShadowBuffer(self._seconds, self._max_bytes))
        if subs:
            shadow.connections = list(self._build(shard, subs, shadow.buffer.append))
            for conn in shadow.connections:
                conn.start()
        with self._lock:
            self._shadows[shard] = shadow
        log.info("standby for shard %d (%d subscriptions)", shard, len(shards.keys_of(subs)))

    def _drop(self, shard: int) -> _Shadow | None:
        with self._lock:
            shadow = self._shadows.pop(shard, None)
        if shadow is None:
            return None
        threads = [threading.Thread(target=c.stop, args=(3.0,)) for c in shadow.connections]
        for t in threads:
            t.start()
        for t in threads:
            t.join(4.0)
        return shadow

    def _write(self, shard: int, shadow: _Shadow) -> None:
        self._drop(shard)  # its connections stopped: what it kept is final
        frames = shadow.buffer.drain()
        started = time.monotonic()
        written = self._take_over(shard, shadow.subscriptions, frames)
        metrics.standby_frames_written_total.inc(written)
        log.warning("standby: shard %d's owner is gone; wrote again %d of the %d frames "
                    "kept (records already in Kafka dropped by identity) in %.2f s", shard,
                    written, len(frames), time.monotonic() - started)

    def status(self) -> dict[str, Any]:
        """For /readyz: the shards shadowed and what each keeps."""
        with self._lock:
            return {str(s): {"owner_gone": sh.gone_at is not None,
                             "streaming": all(c.is_up and c.all_subscribed
                                              for c in sh.connections),
                             "kept_bytes": sh.buffer.nbytes}
                    for s, sh in sorted(self._shadows.items())}
