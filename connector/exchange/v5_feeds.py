"""Shared v5 topic feeds of the local exchange: one per wire topic, many clients.

A ``Feed`` holds a topic's state (for books: the ``Book``, its ``History`` and
the last ``seq``/``cts``) and its subscribers. Everything a feed sends goes
through ``Sink.broadcast`` synchronously on the event loop, so a client that
subscribes between two updates gets the snapshot at exactly the current ``u``
and then every later delta, in order; all clients see the same ``u`` for the
same update, as on Bybit.

Topic names: ``orderbook.{1,50,200,1000}.S``, ``orderbook.rpi.S``,
``publicTrade.S``, ``tickers.S``, ``kline.{interval}.S``, ``priceLimit.S``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from connector.exchange.v5_books import Book, History, Size, level
from connector.exchange.v5_market import (
    DEPTHS,
    KLINE_MINUTES,
    RPI_DEPTH,
    V5Market,
    now_ms,
    valid_symbol,
)

# Bybit's spot push period per feed kind (seconds), used unless a rate is forced.
PERIODS = {"orderbook.1": 0.01, "orderbook.50": 0.02, "orderbook.200": 0.1,
           "orderbook.1000": 0.2, "orderbook.rpi": 0.1, "tickers": 0.05, "priceLimit": 0.3,
           "publicTrade": 0.05, "kline": 1.0}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A parsed public topic: ``kind`` is the topic id without symbol
    (``orderbook.50``, ``orderbook.rpi``, ``kline.1``, ``publicTrade`` ...)."""

    topic: str
    kind: str
    symbol: str
    depth: int = 0
    rpi: bool = False
    interval: str = ""

    @property
    def period_key(self) -> str:
        return "kline" if self.kind.startswith("kline.") else self.kind


def parse_public(topic: str) -> TopicSpec | None:
    """The topic's parts, or None when Bybit would answer "handler not found"
    (unknown name, depth or interval, lowercase or unknown symbol)."""
    parts = topic.split(".")
    if not valid_symbol(parts[-1]):
        return None
    symbol = parts[-1]
    if len(parts) == 2 and parts[0] in ("publicTrade", "tickers", "priceLimit"):
        return TopicSpec(topic, parts[0], symbol)
    if len(parts) == 3 and parts[0] == "orderbook":
        if parts[1] == "rpi":
            return TopicSpec(topic, "orderbook.rpi", symbol, RPI_DEPTH, rpi=True)
        if parts[1] in {str(d) for d in DEPTHS}:
            return TopicSpec(topic, f"orderbook.{parts[1]}", symbol, int(parts[1]))
    if len(parts) == 3 and parts[0] == "kline" and parts[1] in KLINE_MINUTES:
        return TopicSpec(topic, f"kline.{parts[1]}", symbol, interval=parts[1])
    return None


def book_topic(symbol: str, depth: int | str) -> str:
    return f"orderbook.{depth}.{symbol}"


class Subscriber(Protocol):
    def push(self, text: str, topic: str | None) -> None: ...


@dataclass(eq=False)
class Feed:
    spec: TopicSpec
    subscribers: dict[Subscriber, None] = field(default_factory=dict)  # ordered set
    book: Book | None = None
    history: History | None = None
    seq: int = 0
    cts: int = 0
    last_frame: dict[str, Any] | None = None  # level 1: what a resend repeats
    last_delta: dict[str, Any] | None = None  # what a duplicate fault repeats
    last_sent: float = 0.0
    gaps_pending: int = 0
    corrupt_pending: list[str] = field(default_factory=list)  # faults for the next deltas
    skipped: list[int] = field(default_factory=list)  # u values never sent (gap faults)
    restarts: int = 0
    frames: int = 0
    task: Any = None


class Feeds:
    """Every public feed, created on first subscribe; books outlive unsubscribes
    (state and ``u`` are frozen while nobody listens)."""

    def __init__(self, market: V5Market,
                 broadcast: Callable[[Feed, dict[str, Any] | str], None],
                 history: int = 10_000, l1_resend: float = 3.0,
                 l1_change_prob: float = 0.5) -> None:
        self.market, self.broadcast = market, broadcast
        self.history, self.l1_resend, self.l1_change_prob = history, l1_resend, l1_change_prob
        self.feeds: dict[str, Feed] = {}

    def get(self, spec: TopicSpec) -> Feed:
        feed = self.feeds.get(spec.topic)
        if feed is None:
            feed = Feed(spec)
            if spec.depth:
                feed.book = self.market.book(spec.symbol, spec.depth, spec.rpi,
                                             self.l1_change_prob)
                feed.history = History(self.history, every=max(1, min(500, self.history // 4)))
                feed.history.reset(feed.book)
                self._stamp(feed)
            self.feeds[spec.topic] = feed
        return feed

    def _stamp(self, feed: Feed) -> None:
        feed.seq = self.market.symbol(feed.spec.symbol).next_seq()
        feed.cts = now_ms() - 2

    # -- frames ----------------------------------------------------------------------

    def snapshot(self, feed: Feed) -> dict[str, Any]:
        """The book as it is now (at the current ``u``)."""
        assert feed.book is not None
        bids, asks = feed.book.levels()
        return self.market.book_frame(feed.spec.topic, feed.book, "snapshot", bids, asks,
                                      feed.seq, feed.cts)

    def initial(self, feed: Feed) -> dict[str, Any] | None:
        """What a new subscriber gets first: a book snapshot; nothing otherwise
        (no trade history on v5)."""
        if feed.book is None:
            return None
        if feed.spec.depth == 1:
            if feed.last_frame is None:
                feed.last_frame = self.snapshot(feed)
                feed.last_sent = time.monotonic()
            return {**feed.last_frame, "ts": now_ms()}
        return self.snapshot(feed)

    def tick(self, feed: Feed) -> None:
        """One push period of a feed: update its state and broadcast."""
        spec, m = feed.spec, self.market
        if feed.book is not None:
            self._tick_book(feed)
        elif spec.kind == "publicTrade":
            frame = m.trades(spec.symbol, spec.topic)
            if frame is not None:
                self.broadcast(feed, frame)
        elif spec.kind == "tickers":
            self.broadcast(feed, m.ticker(spec.symbol, spec.topic))
        elif spec.kind == "priceLimit":
            self.broadcast(feed, m.price_limit(spec.symbol, spec.topic))
        else:
            for frame in m.klines(spec.symbol, spec.interval, spec.topic):
                self.broadcast(feed, frame)

    def _tick_book(self, feed: Feed) -> None:
        book, history = feed.book, feed.history
        assert book is not None and history is not None
        update = book.step()
        now = time.monotonic()
        if not update.changed:
            if (book.depth == 1 and feed.last_frame is not None
                    and now - feed.last_sent >= self.l1_resend):
                self.resend_l1(feed)
            return
        history.record(book, update)
        self._stamp(feed)
        if feed.gaps_pending > 0:
            feed.gaps_pending -= 1
            feed.skipped.append(book.u)
            return
        if book.depth == 1:
            feed.last_frame = self.snapshot(feed)
            feed.last_sent = now
            self.broadcast(feed, feed.last_frame)
        else:
            feed.last_delta = self.market.book_frame(
                feed.spec.topic, book, "delta", update.bids, update.asks, feed.seq, feed.cts)
            if feed.corrupt_pending:
                self.broadcast(feed, corrupted(feed.last_delta, feed.corrupt_pending.pop(0)))
            else:
                self.broadcast(feed, feed.last_delta)

    # -- faults ------------------------------------------------------------------------

    def resend_l1(self, feed: Feed) -> None:
        """Level 1's keep-alive: the same snapshot (same ``u``, ``seq``, ``cts``),
        new ``ts``."""
        if feed.last_frame is None:
            feed.last_frame = self.snapshot(feed)
        feed.last_sent = time.monotonic()
        self.broadcast(feed, {**feed.last_frame, "ts": now_ms()})

    def duplicate(self, feed: Feed) -> bool:
        """Send the last delta again (same ``u``): a stale duplicate for clients."""
        if feed.last_delta is None:
            return False
        self.broadcast(feed, feed.last_delta)
        return True

    def resnapshot(self, feed: Feed) -> None:
        """A snapshot at the current ``u``, as Bybit sends when it resyncs itself."""
        self.broadcast(feed, self.snapshot(feed))

    def restart(self, feed: Feed) -> None:
        """Bybit's service restart: a fresh book sent as a snapshot with ``u=1``."""
        assert feed.book is not None and feed.history is not None
        feed.book.reset(feed.book.mid(), 1)
        feed.history.reset(feed.book)
        feed.restarts += 1
        self._stamp(feed)
        feed.last_frame = self.snapshot(feed)
        feed.last_sent = time.monotonic()
        self.broadcast(feed, feed.last_frame)

    def book_feeds(self, symbol: str | None, depth: str | None) -> list[Feed]:
        """Book feeds matching ``symbol``/``depth`` (None: all; depth "rpi" allowed)."""
        return [f for f in self.feeds.values() if f.book is not None
                and (symbol is None or f.spec.symbol == symbol)
                and (depth is None or f.spec.kind == f"orderbook.{depth}")]


CORRUPT_MODES = ("missing_asks", "missing_bids", "bad_level", "truncated")


def corrupted(frame: dict[str, Any], mode: str) -> dict[str, Any] | str:
    """A book delta spoilt on the wire (the book itself moved on as usual):
    without its ``a`` or ``b`` key, with a level that is no [price, size] pair,
    or cut off halfway through its JSON text."""
    data = dict(frame["data"])
    if mode == "missing_asks":
        del data["a"]
    elif mode == "missing_bids":
        del data["b"]
    elif mode == "bad_level":
        data["b"] = [*data["b"], ["1"]]
    elif mode == "truncated":
        text = json.dumps(frame, separators=(",", ":"))
        return text[:max(1, len(text) // 2)]
    else:
        raise ValueError(f"mode must be one of {CORRUPT_MODES}")
    return {**frame, "data": data}


def wire_levels(side: dict[int, Size], bids: bool) -> list[list[str]]:
    """A ``History`` side as wire levels, best first."""
    return [level(p, side[p]) for p in sorted(side, reverse=bids)]
