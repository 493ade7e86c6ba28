"""A simulated v5 spot account for the local exchange's ``/v5/private`` stream.

Each ``step`` advances one order's life (New → PartiallyFilled → Filled, now and
then Cancelled / PartiallyFilledCanceled, and now and then the documented
double ``Filled`` when a cancel races the last fill) and returns the events it
produced, in the order Bybit pushes them: fast executions, the order update,
the executions (several fills in one message sometimes), then the wallet.

Events are ``(stream, rows, msg_id)`` with ``stream`` one of ``order``,
``execution``, ``execution.fast``, ``wallet``; the server names the topic as
each client subscribed it (all-in-one ``order`` or categorised ``order.spot``).
Row fields and key order follow ``tests/samples/v5``.
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass
from typing import Any

from connector.exchange.v5_market import now_ms

Event = tuple[str, list[dict[str, Any]], str | None]
UID = "100401071"


@dataclass(eq=False)
class Order:
    order_id: str
    link_id: str
    side: str
    price: float
    qty: float
    created: int
    cum_qty: float = 0.0
    cum_value: float = 0.0
    cum_fee: float = 0.0
    status: str = "New"


def private_frame(stream: str, topic: str, rows: list[dict[str, Any]], msg_id: str | None,
                  created: int) -> dict[str, Any]:
    """One private push; envelope key order as Bybit's (and the samples): fast
    executions have no ``id``, executions put ``topic`` before ``id``."""
    if stream == "execution.fast":
        return {"topic": topic, "creationTime": created, "data": rows}
    if stream == "execution":
        return {"topic": topic, "id": msg_id, "creationTime": created, "data": rows}
    return {"id": msg_id, "topic": topic, "creationTime": created, "data": rows}


class SpotAccount:
    """Orders, fills and balances of one UNIFIED account (BTCUSDT)."""

    def __init__(self, seed: int = 11, symbol: str = "BTCUSDT") -> None:
        self.rng = random.Random(seed)
        self.symbol = symbol
        self._ids = itertools.count(2_051_734_189_062_617_856)
        self._exec_ids = itertools.count(2_100_000_000_433_129_841)
        self._links = itertools.count(1)
        self.seq = 81_234_567_890
        self.price = 121_958.40
        self.balances = {"BTC": 1.0, "USDT": 100_000.0}
        self.realised = {"BTC": 0.0, "USDT": 0.0}
        self.order: Order | None = None

    def step(self) -> list[Event]:
        rng = self.rng
        self.price = round(self.price * (1 + rng.gauss(0, 0.0003)), 2)
        order = self.order
        if order is None:
            order = Order(str(next(self._ids)), f"kc-test-{next(self._links):06d}",
                          "Buy" if rng.random() < 0.5 else "Sell", self.price,
                          round(rng.uniform(0.001, 0.02), 6), now_ms())
            self.order = order
            return [("order", [self._order_row(order)], self._msg_id())]
        roll = rng.random()
        if roll < 0.1:
            order.status = "Cancelled" if order.cum_qty == 0 else "PartiallyFilledCanceled"
            self.order = None
            return [("order", [self._order_row(order, cancel_type="CancelByUser")],
                     self._msg_id())]
        leaves = round(order.qty - order.cum_qty, 6)
        fills = []
        for _ in range(2 if roll < 0.35 else 1):
            leaves = round(order.qty - order.cum_qty, 6)
            if leaves <= 0:
                break
            qty = leaves if rng.random() < 0.4 or leaves < 0.002 else round(leaves / 2, 6)
            fills.append(self._fill(order, qty))
        order.status = "Filled" if order.qty - order.cum_qty < 1e-9 else "PartiallyFilled"
        msg_id = self._msg_id()
        events: list[Event] = [
            ("execution.fast", [self._fast_row(order, f) for f in fills], None),
            ("order", [self._order_row(order)], msg_id),
            ("execution", [self._exec_row(order, f) for f in fills], msg_id)]
        if order.status == "Filled" and rng.random() < 0.15:
            # A cancel raced the last fill: Bybit sends a second Filled row.
            events.append(("order", [self._order_row(
                order, cancel_type="CancelByUser", reject="EC_OrigClOrdIDDoesNotExist")],
                self._msg_id()))
        events.append(("wallet", [self._wallet_row()],
                       f"{UID}{uuid.UUID(int=rng.getrandbits(128))}"))
        if order.status == "Filled":
            self.order = None
        return events

    # -- rows ----------------------------------------------------------------------

    def _msg_id(self) -> str:
        self.seq += self.rng.randrange(1, 8)
        return f"{UID}-20000-{self.seq}"

    def _fill(self, order: Order, qty: float) -> dict[str, Any]:
        price = round(order.price - self.rng.choice((0.0, 0.01)), 2)
        fee_coin = "BTC" if order.side == "Buy" else "USDT"
        fee = qty * 0.001 if fee_coin == "BTC" else qty * price * 0.001
        order.cum_qty = round(order.cum_qty + qty, 6)
        order.cum_value += qty * price
        order.cum_fee += fee
        sign = 1 if order.side == "Buy" else -1
        self.balances["BTC"] += sign * qty - (fee if fee_coin == "BTC" else 0)
        self.balances["USDT"] -= sign * qty * price + (fee if fee_coin == "USDT" else 0)
        self.realised[fee_coin] -= fee
        return {"id": str(next(self._exec_ids)), "qty": qty, "price": price, "fee": fee,
                "fee_coin": fee_coin, "time": str(now_ms()), "leaves": order.qty - order.cum_qty,
                "seq": self.seq + 1, "maker": self.rng.random() < 0.4}

    def _order_row(self, o: Order, cancel_type: str = "UNKNOWN",
                   reject: str = "EC_NoError") -> dict[str, Any]:
        avg = f"{o.cum_value / o.cum_qty:.8f}" if o.cum_qty else ""
        fee_coin = "BTC" if o.side == "Buy" else "USDT"
        leaves = max(0.0, o.qty - o.cum_qty) if o.status in ("New", "PartiallyFilled") else 0.0
        return {
            "category": "spot", "symbol": self.symbol, "orderId": o.order_id,
            "orderLinkId": o.link_id, "parentOrderLinkId": "", "blockTradeId": "",
            "side": o.side, "positionIdx": 0, "orderStatus": o.status, "cancelType": cancel_type,
            "rejectReason": reject, "timeInForce": "GTC", "isLeverage": "0",
            "price": f"{o.price:.2f}", "brokerOrderPrice": "", "qty": f"{o.qty:.6f}",
            "avgPrice": avg, "leavesQty": f"{leaves:.6f}",
            "leavesValue": f"{leaves * o.price:.8f}", "cumExecQty": f"{o.cum_qty:.6f}",
            "cumExecValue": f"{o.cum_value:.8f}", "cumExecFee": f"{o.cum_fee:.8f}",
            "closedPnl": "0", "feeCurrency": fee_coin, "orderType": "Limit",
            "stopOrderType": "", "ocoTriggerBy": "OcoTriggerByUnknown", "orderIv": "",
            "marketUnit": "", "slippageToleranceType": "UNKNOWN", "slippageTolerance": "0",
            "triggerPrice": "0.00", "takeProfit": "0.00", "stopLoss": "0.00",
            "tpLimitPrice": "0.00", "slLimitPrice": "0.00", "tpTriggerBy": "",
            "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "",
            "lastPriceOnCreated": f"{o.price:.2f}", "reduceOnly": False,
            "closeOnTrigger": False, "placeType": "", "smpType": "None", "smpGroup": 0,
            "smpOrderId": "", "createdTime": str(o.created), "updatedTime": str(now_ms()),
            "cumFeeDetail": {fee_coin: f"{o.cum_fee:.8f}"} if o.cum_qty else {},
            "rpiTakerAccess": False, "rpiMatchedQty": "0"}

    def _exec_row(self, o: Order, f: dict[str, Any]) -> dict[str, Any]:
        return {
            "category": "spot", "symbol": self.symbol, "closedSize": "",
            "execFee": f"{f['fee']:.8f}", "execId": f["id"], "execPrice": f"{f['price']:.2f}",
            "execQty": f"{f['qty']:.6f}", "execType": "Trade",
            "execValue": f"{f['qty'] * f['price']:.8f}", "feeRate": "0.001", "tradeIv": "",
            "markIv": "", "blockTradeId": "", "markPrice": "", "indexPrice": "",
            "underlyingPrice": "", "leavesQty": f"{max(0.0, f['leaves']):.6f}",
            "orderId": o.order_id, "orderLinkId": o.link_id, "orderPrice": f"{o.price:.2f}",
            "orderQty": f"{o.qty:.6f}", "orderType": "Limit", "stopOrderType": "",
            "side": o.side, "execTime": f["time"], "isLeverage": "0", "isMaker": f["maker"],
            "seq": f["seq"], "marketUnit": "", "execPnl": "0", "extraFees": "",
            "feeCurrency": f["fee_coin"]}

    def _fast_row(self, o: Order, f: dict[str, Any]) -> dict[str, Any]:
        return {"category": "spot", "symbol": self.symbol, "execId": f["id"],
                "execPrice": f"{f['price']:.2f}", "execQty": f"{f['qty']:.6f}",
                "orderId": o.order_id, "isMaker": f["maker"],
                "orderLinkId": "" if f["maker"] else o.link_id, "side": o.side,
                "execTime": f["time"], "seq": f["seq"]}

    def _wallet_row(self) -> dict[str, Any]:
        usd = {"BTC": self.balances["BTC"] * self.price, "USDT": self.balances["USDT"]}
        total = f"{sum(usd.values()):.8f}"
        coins = [{
            "coin": coin, "equity": f"{bal:.8f}", "usdValue": f"{usd[coin]:.8f}",
            "walletBalance": f"{bal:.8f}", "availableToWithdraw": "", "availableToBorrow": "",
            "borrowAmount": "0", "accruedInterest": "0", "totalOrderIM": "0",
            "totalPositionIM": "0", "totalPositionMM": "0", "unrealisedPnl": "0",
            "cumRealisedPnl": f"{self.realised[coin]:.8f}", "bonus": "0",
            "collateralSwitch": True, "marginCollateral": True, "locked": "0",
            "spotHedgingQty": "0", "spotBorrow": "0", "colRes": "0"}
            for coin, bal in self.balances.items()]
        return {"accountIMRate": "0", "accountIMRateByMp": "0", "accountMMRate": "0",
                "accountMMRateByMp": "0", "totalEquity": total, "totalWalletBalance": total,
                "totalMarginBalance": total, "totalAvailableBalance": total,
                "totalPerpUPL": "0", "totalInitialMargin": "0", "totalInitialMarginByMp": "0",
                "totalMaintenanceMargin": "0", "totalMaintenanceMarginByMp": "0",
                "coin": coins, "accountLTV": "0", "accountType": "UNIFIED"}
