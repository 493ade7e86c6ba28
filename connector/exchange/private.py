"""A simulated account for the private stream: orders, fills, balances.

Every fill produces one ``ticketInfo`` and one ``executionReport`` with
consistent ids and quantities (average price = Z / z), followed by an
``outboundAccountInfo`` balance change; now and then a TP/SL order update
(``stop_executionReport``). Frames are lists of events; like Bybit's own
example, an ``executionReport`` is sometimes sent as a bare object.
"""

from __future__ import annotations

import itertools
from typing import Any

from connector.exchange.market import Market, fmt, now_ms


class Account:
    def __init__(self, market: Market, account_id: str = "10043") -> None:
        self.market = market
        self.account_id = account_id
        self._ids = itertools.count(1_231_193_858_535_151_104)
        self._n = 0
        self.usdt = 100_000.0
        self.btc = 1.0

    def next_frames(self) -> list[Any]:
        self._n += 1
        rng = self.market._rng
        sym = self.market.symbol("BTCUSDT")
        price = sym.step()
        qty = round(rng.uniform(0.001, 0.05), 6)
        side = "BUY" if rng.random() < 0.5 else "SELL"
        order_id, client_id = str(next(self._ids)), str(now_ms())
        trade_id, opp_order = str(next(self._ids)), str(next(self._ids))
        t = now_ms()
        ticket = {"e": "ticketInfo", "E": str(t), "s": "BTCUSDT", "q": fmt(qty, 6), "t": str(t),
                  "p": fmt(price, 2), "T": trade_id, "o": order_id, "c": client_id,
                  "O": opp_order, "a": self.account_id, "A": "10024",
                  "m": rng.random() < 0.5, "S": side}
        report = {"e": "executionReport", "E": str(t), "s": "BTCUSDT", "c": client_id, "S": side,
                  "o": "LIMIT", "f": "GTC", "q": fmt(qty, 6), "p": fmt(price, 2), "X": "FILLED",
                  "i": order_id, "M": opp_order, "l": fmt(qty, 6), "z": fmt(qty, 6),
                  "L": fmt(price, 2), "n": fmt(qty * price * 0.001, 8), "N": "USDT",
                  "u": True, "w": False, "m": False, "O": str(t - 5), "Z": fmt(qty * price, 8),
                  "A": "10024", "C": False, "v": "0", "d": "NO_LIQ", "t": trade_id}
        sign = 1 if side == "BUY" else -1
        self.btc += sign * qty
        self.usdt -= sign * qty * price
        balance = {"e": "outboundAccountInfo", "E": str(t), "T": True, "W": True, "D": True,
                   "B": [{"a": "BTC", "f": fmt(self.btc, 10), "l": "0"},
                         {"a": "USDT", "f": fmt(self.usdt, 10), "l": "0"}]}
        frames: list[Any] = [[ticket], report if self._n % 3 == 0 else [report], [balance]]
        if self._n % 4 == 0:
            frames.append([{
                "e": "stop_executionReport", "E": str(t), "s": "BTCUSDT", "c": str(t),
                "S": "BUY", "o": "MARKET_OF_QUOTE", "f": "GTC", "q": "0", "p": "0",
                "X": "ORDER_NEW", "i": str(next(self._ids)), "T": str(t - 100), "t": "0",
                "C": str(t), "qp": fmt(price * 1.05, 2), "eo": str(next(self._ids)),
                "ti": f"{rng.getrandbits(64):016x}", "si": f"{rng.getrandbits(64):016x}"}])
        return frames
