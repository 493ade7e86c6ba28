"""A new shard's de-duplicated records wait for the seed, then pass through it:
seeding runs beside subscribing, and the overlap with the previous owner is
dropped by id, the rest written in arrival order (``connector.pipeline.hold``)."""

from __future__ import annotations

import json
import threading
from typing import Any

from connector.bybit.events import Stamp
from connector.bybit.v5.frames import decode
from connector.config.model import SubscriptionConfig
from connector.pipeline.core import Pipeline
from connector.pipeline.dedup import RecentIds
from connector.scaleout import handover
from tests.unit.test_pipeline_v5 import RecordingSink, item_mapper, route


def trades(symbol: str, *ids: int) -> str:
    return json.dumps({"topic": f"publicTrade.{symbol}", "ts": 1, "type": "snapshot",
                       "data": [{"T": 1, "s": symbol, "S": "Buy", "v": "1", "p": "1",
                                 "i": str(i), "BT": False} for i in ids]})


def setup() -> tuple[Pipeline, RecordingSink, dict[tuple[str, str], Any], list[Any]]:
    sink = RecordingSink()
    routes = {("v5", "publicTrade"): route("v5", "publicTrade", item_mapper, dedup="trade_id")}
    subs = [SubscriptionConfig(stream="v5", topic="publicTrade", symbols=["BTCUSDT"])]
    return Pipeline(routes, sink), sink, routes, subs


def ids(sink: RecordingSink, symbol: str = "BTCUSDT") -> list[int]:
    return [int(r["trade_id"]) for r in sink.records() if r["symbol"] == symbol]


def test_held_records_wait_for_the_seed_and_the_overlap_is_dropped_by_id() -> None:
    pipe, sink, routes, subs = setup()
    handover.hold(routes, subs)
    pipe.handle(decode(trades("BTCUSDT", 8, 9, 10), "v5", Stamp(1, 1)))  # 8, 9: old owner's
    pipe.handle(decode(trades("ETHUSDT", 1), "v5", Stamp(1, 1)))  # not held: written now
    assert ids(sink) == [] and ids(sink, "ETHUSDT") == [1]
    route = routes[("v5", "publicTrade")]
    route.dedup.setdefault("BTCUSDT", RecentIds(100))
    for old in ("7", "8", "9"):  # what the seed found in Kafka's tail
        route.dedup["BTCUSDT"].add(old)
    assert handover.release(routes, subs) == 1  # one frame was held
    pipe.handle(decode(trades("BTCUSDT", 11), "v5", Stamp(2, 2)))
    assert ids(sink) == [10, 11]
    assert not route.held  # nothing held any more: the per-record fast path


def test_records_arriving_during_the_release_keep_their_order() -> None:
    pipe, sink, routes, subs = setup()
    handover.hold(routes, subs)
    n = 3000
    sent = threading.Event()

    def stream() -> None:
        for i in range(n):
            pipe.handle(decode(trades("BTCUSDT", i), "v5", Stamp(i, i)))
            if i == n // 3:
                sent.set()

    t = threading.Thread(target=stream)
    t.start()
    assert sent.wait(10)
    handover.release(routes, subs)
    t.join(10)
    assert ids(sink) == list(range(n))  # nothing lost, nothing twice, in order


def test_a_release_keeps_the_arrival_order_across_symbols() -> None:
    """One partition keeps the order Bybit sent: held symbols of a route are
    released in the order their frames came, not symbol by symbol."""
    pipe, sink, routes, _ = setup()
    subs = [SubscriptionConfig(stream="v5", topic="publicTrade", symbols=["BTCUSDT", "ETHUSDT"])]
    handover.hold(routes, subs)
    for i, symbol in enumerate(["ETHUSDT", "BTCUSDT", "ETHUSDT", "BTCUSDT"]):
        pipe.handle(decode(trades(symbol, i), "v5", Stamp(i, i)))
    handover.release(routes, subs)
    assert [(r["symbol"], int(r["trade_id"])) for r in sink.records()] == [
        ("ETHUSDT", 0), ("BTCUSDT", 1), ("ETHUSDT", 2), ("BTCUSDT", 3)]


def test_a_private_shard_is_held_whole_and_orders_are_dropped_by_identity() -> None:
    """A private stream is not cut by symbol: every record of its routes waits for
    the seed; an order update the previous owner wrote is dropped by (order id,
    updated time, status, reject reason), while Bybit's documented second
    ``Filled`` row (same order, same time, another reject reason) is kept."""
    from connector.pipeline.core import ORDER_IDENTITY

    def orders(data: Any) -> list[dict[str, Any]]:
        return [{"symbol": i["symbol"], "order_id": i["orderId"], "order_status": i["orderStatus"],
                 "updated_time": int(i["updatedTime"]), "reject_reason": i["rejectReason"]}
                for i in data.items]

    def frame(*rows: tuple[str, str, int, str]) -> str:
        return json.dumps({"id": "m", "topic": "order.spot", "creationTime": 1, "data": [
            {"symbol": "BTCUSDT", "orderId": o, "orderStatus": st, "updatedTime": str(t),
             "rejectReason": r} for o, st, t, r in rows]})

    sink = RecordingSink()
    order_route = route("v5-private", "order.spot", orders)
    order_route.dedup_field = ORDER_IDENTITY
    routes = {("v5-private", "order.spot"): order_route}
    subs = [SubscriptionConfig(stream="v5-private", topic="order.spot")]
    pipe = Pipeline(routes, sink)
    handover.hold(routes, subs)
    pipe.handle(decode(frame(("1", "New", 5, "EC_NoError")), "v5-private", Stamp(1, 1)))
    pipe.handle(decode(frame(("1", "Filled", 7, "EC_NoError"),
                             ("1", "Filled", 7, "EC_OrigClOrdIDDoesNotExist")),
                       "v5-private", Stamp(1, 1)))
    assert sink.records() == []  # held: the previous owner may have written them
    seen = order_route.dedup.setdefault("BTCUSDT", RecentIds(100))
    seen.add(order_route.identity({"order_id": "1", "updated_time": 5, "order_status": "New",
                                   "reject_reason": "EC_NoError"}))  # found in Kafka's tail
    assert handover.release(routes, subs) == 2
    assert [(r["order_status"], r["reject_reason"]) for r in sink.records()] == [
        ("Filled", "EC_NoError"), ("Filled", "EC_OrigClOrdIDDoesNotExist")]
    assert not order_route.held
