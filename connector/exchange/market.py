"""Realistic market data for the local exchange, written as Bybit writes it.

Builds frames as plain dicts in Bybit's own field names (decimal strings,
``t`` in ms, v1 list envelopes, v2 object envelopes). Independent of the
connector's client code on purpose.
"""

from __future__ import annotations

import collections
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


@dataclass
class Symbol:
    """Random-walk state of one symbol; trade ids are platform-unique."""

    name: str
    price: float
    rng: random.Random
    trades: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=60))
    open_24h: float = 0.0

    def step(self) -> float:
        self.price *= 1 + self.rng.gauss(0, 0.0004)
        return self.price


class Market:
    """All symbols' state, shared by every client (as on a real exchange)."""

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
        return trade

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
    """One diffDepth subscription's book: a snapshot, then consistent deltas."""

    def __init__(self, market: Market, sym: Symbol) -> None:
        self.market, self.sym = market, sym
        bids, asks = market.levels(sym, 200)
        self.bids = dict((p, q) for p, q in bids)
        self.asks = dict((p, q) for p, q in asks)
        self.count = 0

    def snapshot(self) -> dict[str, Any]:
        return self._frame([[p, q] for p, q in self.bids.items()],
                           [[p, q] for p, q in self.asks.items()])

    def delta(self) -> dict[str, Any]:
        rng = self.market._rng
        changes_b: list[list[str]] = []
        changes_a: list[list[str]] = []
        for side, changes in ((self.bids, changes_b), (self.asks, changes_a)):
            for _ in range(rng.randrange(1, 4)):
                price = rng.choice(list(side))
                qty = "0" if rng.random() < 0.3 else fmt(rng.uniform(0.001, 5), 4)
                if qty == "0":
                    del side[price]
                else:
                    side[price] = qty
                changes.append([price, qty])
        return self._frame(changes_b, changes_a)

    def _frame(self, bids: list[list[str]], asks: list[list[str]]) -> dict[str, Any]:
        self.count += 1
        return {"e": 301, "s": self.sym.name, "t": now_ms(), "v": self.market.next_version(),
                "b": bids, "a": asks, "o": self.count}
