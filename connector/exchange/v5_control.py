"""Fault injection and ground truth for the local exchange's v5 paths.

Two ways in, same semantics: HTTP ``GET /control/v5/<action>?...`` (handled
on the event loop by ``control``) and the thread-safe methods below, for tests
holding an ``ExchangeServer`` (``exchange.v5.gap("BTCUSDT", 50)`` ...).

Ground truth for tests that rebuild books from what reached Kafka:
``book_at(symbol, depth, u)`` is the exchange's own book right after update
``u`` (levels as on the wire, best first), for the last ``book_history``
updates of that topic (a ``u=1`` restart forgets the earlier ones);
``sent_frames`` returns the frames written to clients (``record_frames`` on
the server sets how many are kept).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from connector.exchange.v5_feeds import CORRUPT_MODES, Feed, Feeds, book_topic, wire_levels

if TYPE_CHECKING:
    from connector.exchange.server import ExchangeServer
    from connector.exchange.v5 import V5Client

T = TypeVar("T")
AUTH_MODES = ("reject", "close", "silent")
V5_STREAMS = {"v5": "v5", "v5-private": "v5-private", "/v5/public/spot": "v5",
              "/v5/private": "v5-private"}


class V5Controls:
    server: ExchangeServer
    feeds: Feeds
    clients: set[V5Client]
    sent: collections.deque[tuple[str, str, str]]
    counters: collections.Counter[str]
    paused: bool
    reject_next: int
    auth_mode: str | None

    def _run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (or here when it is not running)."""
        loop = self.server._loop
        if loop is None or not loop.is_running():
            return fn()

        async def go() -> T:
            return fn()
        result: T = asyncio.run_coroutine_threadsafe(go(), loop).result(10)
        return result

    # -- dispatch (on the loop) ----------------------------------------------------------

    def control(self, action: str, q: dict[str, str]) -> Any:
        """One HTTP control action; KeyError: unknown action, ValueError: bad args."""
        symbol, depth = q.get("symbol") or None, q.get("depth") or None
        if action == "gap":
            return self._gap(symbol, depth, int(q.get("count", "1")))
        if action == "corrupt":
            return self._corrupt(symbol, depth, q.get("mode", "missing_asks"),
                                 int(q.get("count", "1")))
        if action == "restart":
            return self._restart(symbol, depth)
        if action == "duplicate":
            return self._duplicate(symbol, depth)
        if action == "resnapshot":
            return self._resnapshot(symbol, depth)
        if action == "resend_l1":
            return self._resend_l1(symbol)
        if action == "reject_subscribe":
            self.reject_next += int(q.get("count", "1"))
            return "ok"
        if action == "fail_auth":
            return self._fail_auth(q.get("mode") or None)
        if action == "close_idle":
            return self._close_idle(float(q.get("seconds", "1")))
        if action == "drop":
            return self.drop_now(q.get("stream") or q.get("path") or None)
        if action in ("pause", "resume"):
            self.paused = action == "pause"
            return "ok"
        if action == "stats":
            return self._stats()
        if action == "book":
            if symbol is None or depth is None or "u" not in q:
                raise ValueError("book needs symbol, depth and u")
            bids, asks = self._book_at(symbol, depth, int(q["u"]))
            return {"b": bids, "a": asks}
        raise KeyError(f"unknown action v5/{action}")

    def _gap(self, symbol: str | None, depth: str | None, count: int) -> int:
        feeds = self.feeds.book_feeds(symbol, depth)
        for f in feeds:
            f.gaps_pending += count
        return len(feeds)

    def _corrupt(self, symbol: str | None, depth: str | None, mode: str, count: int) -> int:
        if mode not in CORRUPT_MODES:
            raise ValueError(f"mode must be one of {CORRUPT_MODES}")
        feeds = [f for f in self.feeds.book_feeds(symbol, depth) if f.spec.depth != 1]
        for f in feeds:
            f.corrupt_pending += [mode] * count
        return len(feeds)

    def _restart(self, symbol: str | None, depth: str | None) -> int:
        feeds = self.feeds.book_feeds(symbol, depth)
        for f in feeds:
            self.feeds.restart(f)
        return len(feeds)

    def _duplicate(self, symbol: str | None, depth: str | None) -> int:
        return sum(self.feeds.duplicate(f) for f in self.feeds.book_feeds(symbol, depth)
                   if f.subscribers)

    def _resnapshot(self, symbol: str | None, depth: str | None) -> int:
        feeds = [f for f in self.feeds.book_feeds(symbol, depth) if f.subscribers]
        for f in feeds:
            self.feeds.resnapshot(f)
        return len(feeds)

    def _resend_l1(self, symbol: str | None) -> int:
        feeds = [f for f in self.feeds.book_feeds(symbol, "1") if f.subscribers]
        for f in feeds:
            self.feeds.resend_l1(f)
        return len(feeds)

    def _fail_auth(self, mode: str | None) -> str:
        if mode not in (*AUTH_MODES, None, "none"):
            raise ValueError(f"mode must be one of {AUTH_MODES} or none")
        self.auth_mode = None if mode == "none" else mode
        return "ok"

    def _close_idle(self, seconds: float) -> int:
        now = time.monotonic()
        victims = [c for c in self.clients if now - c.last_active >= seconds]
        for c in victims:
            self.counters["idle_closes"] += 1
            c.conn.transport.abort()
        return len(victims)

    def drop_now(self, stream: str | None) -> int:
        """Abort v5 connections (None: all; a legacy stream name: none)."""
        if stream is not None and stream not in V5_STREAMS:
            return 0
        want = None if stream is None else V5_STREAMS[stream]
        victims = [c for c in self.clients if want is None or c.stream == want]
        for c in victims:
            c.conn.transport.abort()
        return len(victims)

    def _feed(self, symbol: str, depth: int | str) -> Feed:
        feed = self.feeds.feeds.get(book_topic(symbol, depth))
        if feed is None or feed.history is None:
            raise KeyError(f"no book {book_topic(symbol, depth)} (never subscribed)")
        return feed

    def _book_at(self, symbol: str, depth: int | str,
                 u: int) -> tuple[list[list[str]], list[list[str]]]:
        feed = self._feed(symbol, depth)
        assert feed.history is not None
        bids, asks = feed.history.at(u)
        return wire_levels(bids, True), wire_levels(asks, False)

    def _stats(self) -> dict[str, Any]:
        topics = {}
        for topic, f in self.feeds.feeds.items():
            row: dict[str, Any] = {"frames": f.frames, "subscribers": len(f.subscribers)}
            if f.book is not None:
                row.update(u=f.book.u, skipped=list(f.skipped[-20:]), restarts=f.restarts)
            topics[topic] = row
        clients = collections.Counter(c.stream for c in self.clients)
        return {"clients": dict(clients), "topics": topics, "counters": dict(self.counters)}

    # -- thread-safe API for tests ------------------------------------------------------

    def gap(self, symbol: str | None = None, depth: int | str | None = None,
            count: int = 1) -> int:
        """The next ``count`` updates of the matching books are applied but not
        sent (clients see ``u`` jump); returns how many books were armed."""
        return self._run(lambda: self._gap(symbol, None if depth is None else str(depth),
                                           count))

    def corrupt(self, symbol: str | None = None, depth: int | str | None = None,
                mode: str = "missing_asks", count: int = 1) -> int:
        """The next ``count`` deltas of the matching books (depth 1 has none) are
        sent spoilt (``CORRUPT_MODES``) while the books move on; returns how
        many books were armed."""
        return self._run(lambda: self._corrupt(symbol, None if depth is None else str(depth),
                                               mode, count))

    def restart(self, symbol: str | None = None, depth: int | str | None = None) -> int:
        """Fresh books sent as ``u=1`` snapshots now (their history restarts)."""
        return self._run(lambda: self._restart(symbol, None if depth is None else str(depth)))

    def duplicate(self, symbol: str | None = None, depth: int | str | None = None) -> int:
        """Send the last delta of the matching books once more (a duplicate ``u``)."""
        return self._run(lambda: self._duplicate(symbol, None if depth is None else str(depth)))

    def resnapshot(self, symbol: str | None = None, depth: int | str | None = None) -> int:
        """Send the matching books' snapshot at their current ``u`` now."""
        return self._run(lambda: self._resnapshot(symbol,
                                                  None if depth is None else str(depth)))

    def resend_l1(self, symbol: str | None = None) -> int:
        """Re-send the current level-1 snapshot (same ``u``) now."""
        return self._run(lambda: self._resend_l1(symbol))

    def reject_next_subscribe(self, count: int = 1) -> None:
        """The next ``count`` v5 subscribe requests fail as a whole."""
        def go() -> None:
            self.reject_next += count
        self._run(go)

    def fail_auth(self, mode: str | None = "reject") -> None:
        """v5 auth: ``reject`` (Params Error), ``close`` (close the socket),
        ``silent`` (no answer), or None (normal)."""
        self._run(lambda: self._fail_auth(mode))

    def close_idle(self, seconds: float = 1.0) -> int:
        """Drop now every v5 connection that neither pinged nor was sent data
        in the last ``seconds``; returns how many."""
        return self._run(lambda: self._close_idle(seconds))

    def drop(self, stream: str | None = None) -> int:
        """Abort v5 connections (``v5``/``v5-private`` or their paths; None: all)."""
        return self._run(lambda: self.drop_now(stream))

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) every v5 feed; connections stay open."""
        def go() -> None:
            self.paused = paused
        self._run(go)

    def stats(self) -> dict[str, Any]:
        """Clients per stream; per topic: frames sent, subscribers, ``u``,
        skipped ``u`` values and restarts of books; counters."""
        return self._run(self._stats)

    def current_u(self, symbol: str, depth: int | str) -> int:
        """The book topic's latest ``u`` (KeyError if never subscribed)."""
        def go() -> int:
            book = self._feed(symbol, depth).book
            assert book is not None
            return book.u
        return self._run(go)

    def book_span(self, symbol: str, depth: int | str) -> tuple[int, int]:
        """(oldest, newest) ``u`` that ``book_at`` can answer."""
        def go() -> tuple[int, int]:
            history = self._feed(symbol, depth).history
            assert history is not None
            span = history.span()
            assert span is not None
            return span
        return self._run(go)

    def book_at(self, symbol: str, depth: int | str,
                u: int) -> tuple[list[list[str]], list[list[str]]]:
        """The exchange's book of ``orderbook.{depth}.{symbol}`` right after
        update ``u``: (bids best first, asks best first), levels as on the wire
        (``[price, size]``, or ``[price, nonRpi, rpi]`` for depth ``"rpi"``).
        KeyError when ``u`` is outside the kept history."""
        return self._run(lambda: self._book_at(symbol, depth, u))

    def sent_frames(self, stream: str | None = None, conn_id: str | None = None,
                    topic: str | None = None, data_only: bool = True) -> list[dict[str, Any]]:
        """Frames written to v5 clients, oldest first, parsed (``stream``: ``v5``
        or ``v5-private``; ``data_only``: only frames with a ``topic``); frames
        a fault cut short are left out."""
        rows = self._run(lambda: list(self.sent))
        out = []
        for cid, s, text in rows:
            if (stream is not None and s != stream) or (conn_id is not None and cid != conn_id):
                continue
            try:
                frame = json.loads(text)
            except ValueError:
                continue  # spoilt on purpose (``corrupt`` mode ``truncated``)
            if data_only and "topic" not in frame:
                continue
            if topic is not None and frame.get("topic") != topic:
                continue
            out.append(frame)
        return out

    def conn_ids(self, stream: str | None = None) -> list[str]:
        """The ``conn_id`` of each open v5 connection."""
        return self._run(lambda: [c.conn_id for c in self.clients
                                  if stream is None or c.stream == stream])
