"""The subscription bookkeeping of one connection, without sockets.

Tracks each (topic_id, symbol) as ``pending``/``active``/``failed``, the
requests awaiting an ack, the retry schedule of failed ones and requested
resubscribes. The connection loop sends what this returns and feeds it acks
and data; every decision (match an ack, isolate a failed batch, retry with
backoff, count) is made here, so it can be followed and tested in one place.

Thread-safety: the connection thread drives it; ``resubscribe`` and the
read-only views may be called from other threads (one lock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from connector.bybit.family import AckInfo, Family, Pair
from connector.bybit.legacy.protocol import Request, Subscription
from connector.ops import metrics

log = logging.getLogger(__name__)

Send = tuple[Request, int]  # a request to send and its attempt number


@dataclass
class _Pending:
    request: Request
    sent: float
    attempt: int = 0


class Subscriptions:
    """What one connection has asked for and what the server answered."""

    def __init__(self, name: str, stream: str, family: Family,
                 subscriptions: tuple[Subscription, ...], ack_timeout: float,
                 retry_initial: float, retry_max: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.stream, self.family = name, stream, family
        self._subs = subscriptions
        self._ack_timeout = ack_timeout
        self._retry_initial, self._retry_max = retry_initial, retry_max
        self._clock = clock
        self._lock = threading.Lock()
        self.pairs = [p for sub in subscriptions for p in family.pairs(sub)]
        self._state: dict[Pair, str] = {}
        self._pending: list[_Pending] = []
        self._retry_at: dict[Request, tuple[float, int]] = {}
        self._unsubscribing: set[str] = set()
        self._resubscribe: dict[Pair, float] = {}  # pair -> when its restart is due
        self._restarted: dict[Pair, tuple[float, float]] = {}  # pair -> (last restart, delay)

    # -- views ---------------------------------------------------------------------

    def all_active(self) -> bool:
        with self._lock:
            return bool(self._state) and all(s == "active" for s in self._state.values())

    def states(self) -> dict[Pair, str]:
        with self._lock:
            return dict(self._state)

    def state(self, pair: Pair) -> str | None:
        return self._state.get(pair)

    # -- a session -------------------------------------------------------------------

    def start(self) -> list[Send]:
        """A new session: everything is pending again; the requests to send."""
        with self._lock:
            self._pending.clear()
            self._retry_at.clear()
            self._resubscribe.clear()
            self._unsubscribing.clear()
            for pair in self.pairs:
                self._state[pair] = "pending"
        if self.family.auth_subscribes:  # auth subscribed every private topic at once
            self._activate(tuple((sub.topic_id, "") for sub in self._subs))
        return [(request, 0) for request in self.family.subscribe(self._subs)]

    def sent(self, request: Request, attempt: int) -> None:
        """``request`` went out; its ack is now awaited."""
        with self._lock:
            self._pending.append(_Pending(request, self._clock(), attempt))

    def close(self) -> None:
        """The session ended: nothing is active or awaited any more."""
        with self._lock:
            for pair, state in self._state.items():
                if state == "active":
                    metrics.subscriptions_active.labels(self.stream, pair[0]).dec()
                self._state[pair] = "pending"
            self._pending.clear()

    # -- time passes ----------------------------------------------------------------

    def tick(self) -> list[Send]:
        """Expire unanswered requests (counted, retried later) and return the
        retries that are due."""
        now = self._clock()
        with self._lock:
            expired = [p for p in self._pending if now - p.sent > self._ack_timeout]
            for p in expired:
                self._pending.remove(p)
            due = [(r, a) for r, (t, a) in self._retry_at.items() if t <= now]
            for r, _ in due:
                del self._retry_at[r]
        for p in expired:
            if all(self._state.get(pair) == "active" for pair in p.request.pairs):
                continue  # data arrived (implicit ack); the ack itself was lost
            log.warning("%s: no ack for %s within %.1f s; retrying", self.name, p.request.text,
                        self._ack_timeout)
            self._failed(p, "ack_timeout")
        return [(self.family.renew(request), attempt) for request, attempt in due]

    # -- the server answers ---------------------------------------------------------

    def on_ack(self, ack: AckInfo) -> list[Send]:
        """Match an ack to its request; returns requests to send (isolation)."""
        if ack.req_id is not None and ack.req_id in self._unsubscribing:
            self._unsubscribing.discard(ack.req_id)
            return []
        pending = self._match(ack)
        if pending is None:
            log.info("%s: ack for nothing pending: %s %s %s", self.name, ack.req_id or "",
                     ack.topic or "", ack.symbol or "")
            return []
        if ack.ok:
            metrics.subscription_ack_seconds.labels(self.stream).observe(
                self._clock() - pending.sent)
            self._activate(pending.request.pairs)
            return []
        parts = self.family.isolate(pending.request)
        if len(parts) > 1:  # find the bad topic: one per request, at once, uncounted
            log.warning("%s: subscribe %s rejected (%s); re-sending its topics one by one",
                        self.name, pending.request.text, ack.detail)
            return [(request, pending.attempt) for request in parts]
        log.error("%s: subscribe %s rejected: %s", self.name, pending.request.text, ack.detail)
        self._failed(pending, "error_ack")
        return []

    def on_data(self, topic_id: str, symbol: str) -> None:
        """Data for a pair before its ack counts as the ack."""
        if not symbol or (topic_id, symbol) not in self._state \
                or self._state[(topic_id, symbol)] == "active":
            return
        log.info("%s: data for %s %s before its ack; treating it as subscribed", self.name,
                 topic_id, symbol)
        self._activate(((topic_id, symbol),))

    # -- resubscribe ------------------------------------------------------------------

    def resubscribe(self, pair: Pair) -> None:
        """Ask for one topic's restart (thread-safe); see ``take_resubscribes``.

        The first restart is at once; one asked for within ``retry_max`` of
        the last waits ``retry_initial``, doubling up to ``retry_max``: a book
        whose every snapshot fails (too large for its topic, say) must not
        make the connector hammer Bybit with resubscribes."""
        now = self._clock()
        with self._lock:
            if pair in self._resubscribe:
                return
            last, delay = self._restarted.get(pair, (None, 0.0))
            if last is None or now - last >= self._retry_max:
                delay = 0.0
            else:
                delay = min(self._retry_max, max(self._retry_initial, delay * 2))
            self._resubscribe[pair] = now + delay
            self._restarted[pair] = (now + delay, delay)
            if delay:
                log.warning("%s: %s %s restarted %.1f s ago; resubscribing in %.1f s", self.name,
                            *pair, now - last if last is not None else 0.0, delay)

    def take_resubscribes(self) -> tuple[list[str], list[Send]]:
        """(unsubscribe texts, subscribe requests) for the restarts now due."""
        now = self._clock()
        with self._lock:
            todo = [pair for pair, due in self._resubscribe.items() if due <= now]
            for pair in todo:
                del self._resubscribe[pair]
        texts: list[str] = []
        sends: list[Send] = []
        for pair in todo:
            unsubscribe, subscribe = self.family.resubscribe(pair)
            if not subscribe:
                continue
            log.info("%s: resubscribing %s %s", self.name, *pair)
            self._set((pair,), "pending")
            for request in unsubscribe:
                if request.req_id is not None:
                    self._unsubscribing.add(request.req_id)
                texts.append(request.text)
            sends += [(request, 0) for request in subscribe]
        return texts, sends

    # -- internals --------------------------------------------------------------------

    def _failed(self, pending: _Pending, reason: str) -> None:
        request = pending.request
        delay = min(self._retry_max, self._retry_initial * 2 ** pending.attempt)
        self._set(request.pairs, "failed")
        with self._lock:
            self._retry_at[request] = (self._clock() + delay, pending.attempt + 1)
        metrics.subscription_failures_total.labels(self.stream, request.pairs[0][0],
                                                   reason).inc()

    def _activate(self, pairs: tuple[Pair, ...]) -> None:
        self._set(pairs, "active")

    def _set(self, pairs: tuple[Pair, ...], state: str) -> None:
        with self._lock:
            for pair in pairs:
                old = self._state.get(pair)
                if old == state:
                    continue
                if old == "active":
                    metrics.subscriptions_active.labels(self.stream, pair[0]).dec()
                elif state == "active":
                    metrics.subscriptions_active.labels(self.stream, pair[0]).inc()
                self._state[pair] = state

    def _match(self, info: AckInfo) -> _Pending | None:
        """The pending request an ack answers: by req_id, else by what it
        names, else the oldest one."""
        with self._lock:
            for p in self._pending:
                req = p.request
                if info.req_id is not None:
                    if req.req_id != info.req_id:
                        continue
                else:
                    if info.topic is not None and req.topic != info.topic:
                        continue
                    if info.symbol is not None and \
                            ",".join(s for _, s in req.pairs) != info.symbol:
                        continue
                self._pending.remove(p)
                return p
            if info.req_id is None and info.topic is None and info.symbol is None \
                    and self._pending:
                return self._pending.pop(0)
        return None
