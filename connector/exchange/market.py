"""Realistic market data for the local exchange, written as Bybit writes it.

Builds frames as plain dicts in Bybit's own field names (decimal strings,
``t`` in ms, v1 list envelopes, v2 object envelopes). Independent of the
connector's client code on purpose.
"""

from __future__ import annotations

import collections
import itertools
import random
import time
from dataclasses import dataclass, field
from typing import Any

KLINE_SECONDS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
                 "2h": 7200, "4h": 14400, "6h": 21600, "12h": 43200, "1d": 86400,
                 "1w": 604800, "1M": 2592000}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fmt(value: float, places: int) -> str:
    """A decimal string like Bybit's: fixed places, trailing zeros trimmed."""
    text = f"{value:.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


TAPE_LIMIT = 1_000_000  # trades kept per symbol for `trade_tape` (hours at Bybit's pace)


@dataclass
class Symbol:
    """Random-walk state of one symbol; trade ids are platform-unique.

    ``tape`` is every trade made on the symbol (the last ``TAPE_LIMIT``),
    whether or not anyone was subscribed; ``trades`` the last 60 (the replay a
    ``trade`` subscribe gets); ``count`` how many trades were ever made, a
    cursor for feeds that forward new trades.
    """

    name: str
    price: float
    rng: random.Random
    trades: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=60))
    tape: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=TAPE_LIMIT))
    count: int = 0
    open_24h: float = 0.0

    def step(self) -> float:
        self.price *= 1 + self.rng.gauss(0, 0.0004)
        return self.price

    def trades_after(self, cursor: int) -> list[dict[str, Any]]:
        """Trades made since ``count`` was ``cursor`` (as many as the tape still holds)."""
        n = min(self.count - cursor, len(self.tape))
        return list(itertools.islice(self.tape, len(self.tape) - n, None)) if n > 0 else []


class Market:
    """All symbols' state, shared by every client (as on a real exchange).

    ``tick`` keeps every known symbol trading whether or not anyone listens
    (the server calls it from a background task), so a client that was away
    misses trades, as on Bybit, and ``trade_tape`` shows what it missed.
    """

    def __init__(self, seed: int = 7) -> None:
        self._rng = random.Random(seed)
        self._symbols: dict[str, Symbol] = {}
        self._trade_id = 2_290_000_000_033_000_000
        self._book_update = 112_801_745

    def symbol(self, name: str) -> Symbol:
        sym = self._symbols.get(name)
        if sym is None:
            base = 20_000.0 if name.startswith("BTC") else 1_000.0 + self._rng.random() * 2_000
            sym = Symbol(name, base, random.Random(hash(name) & 0xFFFF))
            sym.open_24h = base
            self._symbols[name] = sym
            for _ in range(60):  # history for the first subscriber's replay
                self.new_trade(sym)
        return sym

    def new_trade(self, sym: Symbol) -> dict[str, Any]:
        self._trade_id += 1 + self._rng.randrange(3)
        price = sym.step()
        trade = {"v": str(self._trade_id), "t": now_ms(), "p": fmt(price, 2),
                 "q": fmt(self._rng.uniform(0.0001, 2), 6), "m": self._rng.random() < 0.5}
        sym.trades.append(trade)
        sym.tape.append(trade)
        sym.count += 1
        return trade

    def tick(self, trades_per_symbol: int = 1) -> None:
        """One step of the market: new trades on every known symbol."""
        for sym in list(self._symbols.values()):
            for _ in range(trades_per_symbol):
                self.new_trade(sym)

    def trade_tape(self, name: str) -> list[dict[str, Any]]:
        """Every trade made on ``name`` so far, oldest first (empty if unknown)."""
        sym = self._symbols.get(name)
        return list(sym.tape) if sym is not None else []

    def next_version(self) -> str:
        self._book_update += 1
        return f"{self._book_update}_{self._rng.randrange(1, 40)}"

    def levels(self, sym: Symbol, depth: int, places: int = 2) -> tuple[list[list[str]],
                                                                        list[list[str]]]:
        mid = sym.step()
        tick = 10 ** -places
        rng = self._rng
        bids = [[fmt(mid - (i + 1) * tick * 3, places), fmt(rng.uniform(0.001, 5), 4)]
                for i in range(depth)]
        asks = [[fmt(mid + (i + 1) * tick * 3, places), fmt(rng.uniform(0.001, 5), 4)]
                for i in range(depth)]
        return bids, asks

    def ticker(self, sym: Symbol, v1: bool, string_t: bool = False) -> dict[str, Any]:
        price = sym.step()
        t: int | str = now_ms()
        if string_t:
            t = str(t)
        data: dict[str, Any] = {
            "t": t, "s": sym.name, "c": fmt(price, 2), "h": fmt(price * 1.02, 2),
            "l": fmt(price * 0.97, 2), "o": fmt(sym.open_24h, 2),
            "v": fmt(self._rng.uniform(1000, 9000), 6),
            "qv": fmt(self._rng.uniform(1e7, 2e8), 8),
            "m": fmt((price - sym.open_24h) / sym.open_24h, 4),
            "xp": "" if self._rng.random() < 0.1 else fmt(price * 1.0005, 8),
        }
        if v1:
            data["sn"] = sym.name
            data["e"] = 301
        return data

    def kline(self, sym: Symbol, interval: str) -> dict[str, Any]:
        price = sym.step()
        period = KLINE_SECONDS[interval] * 1000
        start = now_ms() // period * period
        return {"t": start, "s": sym.name, "sn": sym.name, "c": fmt(price, 2),
                "h": fmt(price * 1.001, 2), "l": fmt(price * 0.999, 2), "o": fmt(price, 2),
                "v": fmt(self._rng.uniform(1, 50), 6)}

    def lt(self, sym: Symbol) -> dict[str, Any]:
        nav = sym.step() / 2500
        return {"t": now_ms(), "s": sym.name, "nav": fmt(nav, 20),
                "b": fmt(self._rng.uniform(0, 0.001), 18), "l": fmt(3 + self._rng.random(), 18),
                "loan": fmt(-20 - self._rng.random(), 18),
                "ti": fmt(18969 + self._rng.random(), 18), "n": fmt(14 + self._rng.random(), 18)}

    def book_ticker(self, sym: Symbol) -> dict[str, Any]:
        price = sym.step()
        return {"symbol": sym.name, "bidPrice": fmt(price - 0.01, 2),
                "bidQty": fmt(self._rng.uniform(0.001, 3), 6), "askPrice": fmt(price + 0.01, 2),
                "askQty": fmt(self._rng.uniform(0.001, 3), 6), "time": now_ms()}


class DiffBook:
    """One diffDepth subscription's book: a snapshot, then consistent deltas.

    Prices live on a tick grid (integers here, formatted on the way out).
    Every delta changes 1-3 levels a side, each change one of: a new quantity
    for a level, or a level removed (quantity ``"0"``) together with a new one
    inserted at a free price on its side of the spread. So the book keeps
    exactly ``depth`` levels a side, stays uncrossed (bids below the best ask,
    asks above the best bid) and keeps moving, for as long as it runs.
    """

    def __init__(self, market: Market, sym: Symbol, depth: int = 200, places: int = 2) -> None:
        self.market, self.sym, self.places = market, sym, places
        self.tick = 10 ** -places
        mid = round(sym.step() / self.tick)
        rng = market._rng
        # Levels every 3 ticks, so inserts have free prices between them.
        self.bids: dict[int, str] = {mid - 3 * (i + 1): fmt(rng.uniform(0.001, 5), 4)
                                     for i in range(depth)}
        self.asks: dict[int, str] = {mid + 3 * (i + 1): fmt(rng.uniform(0.001, 5), 4)
                                     for i in range(depth)}
        self.count = 0

    def _price(self, ticks: int) -> str:
        return fmt(ticks * self.tick, self.places)

    def snapshot(self) -> dict[str, Any]:
        bids = [[self._price(p), self.bids[p]] for p in sorted(self.bids, reverse=True)]
        asks = [[self._price(p), self.asks[p]] for p in sorted(self.asks)]
        return self._frame(bids, asks)

    def delta(self) -> dict[str, Any]:
        rng = self.market._rng
        changes_b = self._change(self.bids, rng, bid=True)
        changes_a = self._change(self.asks, rng, bid=False)
        return self._frame(changes_b, changes_a)

    def _change(self, side: dict[int, str], rng: random.Random, bid: bool) -> list[list[str]]:
        touched: set[int] = set()
        changes: list[list[str]] = []
        for _ in range(rng.randrange(1, 4)):
            price = rng.choice(list(side))
            if price in touched:
                continue
            touched.add(price)
            if rng.random() < 0.6:
                side[price] = fmt(rng.uniform(0.001, 5), 4)
                changes.append([self._price(price), side[price]])
                continue
            del side[price]
            changes.append([self._price(price), "0"])
            new = self._free_price(side, rng, bid, touched)
            side[new] = fmt(rng.uniform(0.001, 5), 4)
            touched.add(new)
            changes.append([self._price(new), side[new]])
        return changes

    def _free_price(self, side: dict[int, str], rng: random.Random, bid: bool,
                    touched: set[int]) -> int:
        """A price not on the book, on ``side``'s side of the spread, near its levels."""
        if bid:
            low, high = min(side) - 6, min(self.asks) - 1  # strictly below the best ask
        else:
            low, high = max(self.bids) + 1, max(side) + 6  # strictly above the best bid
        while True:
            price = rng.randint(low, high)
            if price not in side and price not in touched and price > 0:
                return price

    def _frame(self, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
        self.count += 1
        return {"e": 301, "s": self.sym.name, "t": now_ms(), "v": self.market.next_version(),
                "b": bids, "a": asks, "o": self.count}
