"""Public v5 spot data for the local exchange, written as Bybit writes it.

Frames are plain dicts whose key order follows Bybit's v5 docs (and the
samples in ``tests/samples/v5``): orderbook ``topic, ts, type, data, cts``;
trades, klines ``topic, data, ts, type`` / ``topic, ts, type, data``; tickers
``topic, ts, type, cs, data``. Independent of the connector's client code on
purpose, so a shared misunderstanding cannot hide.

One ``SymbolState`` per symbol, shared by every topic and client: the price
walk, the cross sequence ``seq`` (monotonic with holes, shared across depths
and trades) and the platform-wide trade id.
"""

from __future__ import annotations

import random
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from connector.exchange.v5_books import Book, Size, level, price_text

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
DEPTHS = (1, 50, 200, 1000)
RPI_DEPTH = 50
# Interval code → minutes (D, W, M as 1440, 10080, 43200).
KLINE_MINUTES = {"1": 1, "3": 3, "5": 5, "15": 15, "30": 30, "60": 60, "120": 120,
                 "240": 240, "360": 360, "720": 720, "D": 1440, "W": 10080, "M": 43200}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def valid_symbol(symbol: str) -> bool:
    """Uppercase Bybit-like names; ``INVALID*`` is the agreed unknown symbol."""
    return bool(SYMBOL_RE.match(symbol)) and not symbol.startswith("INVALID")


@dataclass(eq=False)
class Candle:
    start: int
    end: int
    open: int
    high: int
    low: int
    close: int
    volume: float = 0.0
    turnover: float = 0.0
    last_match: int = 0


@dataclass(eq=False)
class SymbolState:
    name: str
    rng: random.Random
    price: int  # last trade price, ticks of 0.01
    open_24h: int
    seq: int = 81_234_567_890
    volume_24h: float = 9_000.0
    candles: dict[str, Candle] = field(default_factory=dict)

    def next_seq(self) -> int:
        """Cross sequence: increasing, with holes."""
        self.seq += self.rng.randrange(1, 6)
        return self.seq


class V5Market:
    """All v5 symbols' state, shared by every client (as on a real exchange)."""

    def __init__(self, seed: int = 7, kline_scale: float = 1.0) -> None:
        self.seed = seed
        self.kline_scale = kline_scale  # candle length multiplier (tests: short candles)
        self._rng = random.Random(seed)
        self._symbols: dict[str, SymbolState] = {}
        self.trade_id = 2_290_000_000_912_345_670

    def symbol(self, name: str) -> SymbolState:
        sym = self._symbols.get(name)
        if sym is None:
            rng = random.Random(zlib.crc32(name.encode()) ^ self.seed)
            base = 12_195_840 if name.startswith("BTC") else rng.randrange(10_000, 500_000)
            sym = SymbolState(name, rng, base, base - rng.randrange(-base // 50, base // 50))
            self._symbols[name] = sym
        return sym

    def book(self, name: str, depth: int, rpi: bool = False,
             l1_change_prob: float = 0.5) -> Book:
        """A new book for a topic; ``u`` starts high, like a long-running exchange."""
        sym = self.symbol(name)
        rng = random.Random(sym.rng.getrandbits(32))
        return Book(depth, sym.price, rng, u=rng.randrange(1_000_000, 50_000_000), rpi=rpi,
                    change_prob=l1_change_prob if depth == 1 else 1.0)

    # -- frames ----------------------------------------------------------------------

    def book_frame(self, topic: str, book: Book, kind: str, bids: list[tuple[int, Size]],
                   asks: list[tuple[int, Size]], seq: int, cts: int,
                   ts: int | None = None) -> dict[str, Any]:
        return {"topic": topic, "ts": now_ms() if ts is None else ts, "type": kind,
                "data": {"s": topic.rsplit(".", 1)[1], "b": [level(p, s) for p, s in bids],
                         "a": [level(p, s) for p, s in asks], "u": book.u, "seq": seq},
                "cts": cts}

    def trades(self, name: str, topic: str) -> dict[str, Any] | None:
        """Some new trades (several per message now and then), or None when quiet."""
        sym = self.symbol(name)
        rng = self._rng
        if rng.random() < 0.4:
            return None
        rows = []
        t = now_ms()
        seq = sym.next_seq()
        for _ in range(1 if rng.random() < 0.7 else rng.randrange(2, 6)):
            side = "Buy" if rng.random() < 0.5 else "Sell"
            sym.price = max(100, sym.price + rng.choice((-2, -1, 0, 0, 1, 2)))
            qty = rng.uniform(0.000001, 0.5)
            self.trade_id += rng.randrange(1, 4)
            self._feed_candles(sym, qty, t)
            sym.volume_24h += qty
            rows.append({"T": t, "s": name, "S": side, "v": f"{qty:.6f}",
                         "p": price_text(sym.price), "i": str(self.trade_id), "BT": False,
                         "RPI": rng.random() < 0.05, "seq": seq})
            if rng.random() < 0.3:
                seq = sym.next_seq()
        return {"topic": topic, "ts": now_ms(), "type": "snapshot", "data": rows}

    def ticker(self, name: str, topic: str) -> dict[str, Any]:
        sym = self.symbol(name)
        sym.price = max(100, sym.price + self._rng.choice((-1, 0, 0, 1)))
        pcnt = (sym.price - sym.open_24h) / sym.open_24h
        return {"topic": topic, "ts": now_ms(), "type": "snapshot", "cs": sym.next_seq(),
                "data": {"symbol": name, "lastPrice": price_text(sym.price),
                         "highPrice24h": price_text(max(sym.price, sym.open_24h) * 102 // 100),
                         "lowPrice24h": price_text(min(sym.price, sym.open_24h) * 97 // 100),
                         "prevPrice24h": price_text(sym.open_24h),
                         "volume24h": f"{sym.volume_24h:.6f}",
                         "turnover24h": f"{sym.volume_24h * sym.price / 100:.8f}",
                         "price24hPcnt": f"{pcnt:.4f}",
                         "usdIndexPrice": "" if name.endswith("USDC") else
                         f"{sym.price / 100 * 1.0001:.7f}"}}

    def price_limit(self, name: str, topic: str) -> dict[str, Any]:
        sym = self.symbol(name)
        return {"topic": topic, "ts": now_ms(),
                "data": {"symbol": name, "buyLmt": price_text(sym.price * 103 // 100),
                         "sellLmt": price_text(sym.price * 97 // 100)}}

    def _candle_ms(self, interval: str) -> int:
        return max(1, int(KLINE_MINUTES[interval] * 60_000 * self.kline_scale))

    def _feed_candles(self, sym: SymbolState, qty: float, t: int) -> None:
        for c in sym.candles.values():
            if c.start <= t <= c.end:
                c.high, c.low, c.close = max(c.high, sym.price), min(c.low, sym.price), sym.price
                c.volume += qty
                c.turnover += qty * sym.price / 100
                c.last_match = t

    def klines(self, name: str, interval: str, topic: str) -> list[dict[str, Any]]:
        """The current candle; when it has closed, first its ``confirm=true`` version."""
        sym = self.symbol(name)
        t = now_ms()
        length = self._candle_ms(interval)
        frames = []
        c = sym.candles.get(interval)
        if c is not None and t > c.end:
            frames.append(self._kline_frame(topic, interval, c, True, t))
            c = None
        if c is None:
            start = t // length * length
            c = Candle(start, start + length - 1, sym.price, sym.price, sym.price, sym.price,
                       last_match=t)
            sym.candles[interval] = c
        frames.append(self._kline_frame(topic, interval, c, False, t))
        return frames

    @staticmethod
    def _kline_frame(topic: str, interval: str, c: Candle, confirm: bool,
                     t: int) -> dict[str, Any]:
        return {"topic": topic,
                "data": [{"start": c.start, "end": c.end, "interval": interval,
                          "open": price_text(c.open), "close": price_text(c.close),
                          "high": price_text(c.high), "low": price_text(c.low),
                          "volume": f"{c.volume:.6f}", "turnover": f"{c.turnover:.8f}",
                          "confirm": confirm, "timestamp": max(c.last_match, c.start)}],
                "ts": t, "type": "snapshot"}
