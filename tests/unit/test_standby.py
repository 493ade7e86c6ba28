"""The hot standby's pure core (``connector.scaleout.standby``): who stands by for whom,
the group's membership as the broker describes it, what a standby writes of the
frames it kept, and how much it keeps."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from connector.bybit.events import Stamp
from connector.bybit.v5.frames import decode
from connector.scaleout.standby import ShadowBuffer, membership, select, standby_of
from tests.unit.test_pipeline_v5 import item_mapper, route


def test_the_standby_is_never_the_owner_and_spreads_over_the_others() -> None:
    members = ["m-a", "m-b", "m-c"]
    picks = Counter()
    for shard in range(300):
        owner = members[shard % 3]
        pick = standby_of(shard, owner, members)
        assert pick in members and pick != owner
        picks[pick] += 1
    assert min(picks.values()) > 60  # roughly even
    assert standby_of(1, "m-a", ["m-a"]) is None  # alone: nobody to stand by


def test_a_member_leaving_moves_only_its_own_standbys() -> None:
    before = {s: standby_of(s, "m-a", ["m-a", "m-b", "m-c", "m-d"]) for s in range(100)}
    after = {s: standby_of(s, "m-a", ["m-a", "m-b", "m-c"]) for s in range(100)}
    assert all(after[s] == before[s] for s in range(100) if before[s] != "m-d")


def test_membership_from_describe_groups() -> None:
    description = {"group_state": "Stable", "error": None, "members": [
        {"member_id": "m-a", "member_assignment": {"assigned_partitions": [
            {"topic": "coord", "partitions": [0, 2]}, {"topic": "other", "partitions": [1]}]}},
        {"member_id": "m-b", "member_assignment": {"assigned_partitions": [
            {"topic": "coord", "partitions": [1, 3]}]}}]}
    assert membership(description, "coord") == (True, {"m-a", "m-b"},
                                                 {0: "m-a", 2: "m-a", 1: "m-b", 3: "m-b"})
    assert not membership({**description, "group_state": "PreparingRebalance"}, "coord")[0]


def book(kind: str, u: int, symbol: str = "BTCUSDT") -> Any:
    return decode(json.dumps({"topic": f"orderbook.50.{symbol}", "ts": 1, "type": kind,
                              "data": {"s": symbol, "b": [], "a": [], "u": u, "seq": u}}),
                  "v5", Stamp(1, 1))


def trade(i: int) -> Any:
    return decode(json.dumps({"topic": "publicTrade.BTCUSDT", "ts": 1, "type": "snapshot",
                              "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1",
                                        "i": str(i), "BT": False}]}), "v5", Stamp(1, 1))


def test_a_book_continues_at_its_last_update_in_kafka_or_at_a_newer_snapshot() -> None:
    routes = {"orderbook.50": route("v5", "orderbook.50", item_mapper, book=True),
              "publicTrade": route("v5", "publicTrade", item_mapper, dedup="trade_id"),
              "tickers": route("v5", "tickers", item_mapper)}
    events = [book("snapshot", 10), book("delta", 11), trade(1), book("delta", 12),
              book("delta", 13), book("snapshot", 20, "ETHUSDT"), book("delta", 21, "ETHUSDT"),
              book("delta", 5, "XRPUSDT")]

    def route_of(event: Any) -> Any:
        return routes.get(event.topic_id)

    # BTC ends at u=11 in Kafka: continue with 12; ETH ends at 25: nothing newer
    # here, left to the new owner's snapshot; XRP is not in Kafka: no snapshot kept.
    todo, starts = select(events, route_of, {("orderbook.50", "BTCUSDT"): 11,
                                             ("orderbook.50", "ETHUSDT"): 25})
    assert [(e.topic_id, e.items[0].get("u", e.items[0].get("i"))) for e in todo] == [
        ("publicTrade", "1"), ("orderbook.50", 12), ("orderbook.50", 13)]
    assert starts == {("orderbook.50", "BTCUSDT"): 11}
    # A marker ends the chain in Kafka (None): a kept snapshot starts it again.
    todo, starts = select(events, route_of, {("orderbook.50", "ETHUSDT"): None})
    assert starts[("orderbook.50", "ETHUSDT")] is None
    assert [e.items[0]["u"] for e in todo if e.symbol == "ETHUSDT"] == [20, 21]
    # This replica owns the shard now: its own snapshot restarts the books.
    todo, starts = select(events, route_of, {("orderbook.50", "BTCUSDT"): 11}, books=False)
    assert starts == {} and [e.topic_id for e in todo] == ["publicTrade"]


def test_the_buffer_is_bounded_by_age_and_by_bytes() -> None:
    buffer = ShadowBuffer(seconds=0.2, max_bytes=10_000)
    for i in range(100):
        buffer.append(trade(i))
    assert buffer.nbytes <= 10_000
    kept = buffer.drain()
    assert 0 < len(kept) < 100 and kept[-1].items[0]["i"] == "99"  # the newest kept
    buffer.append(trade(1))
    time.sleep(0.25)
    buffer.append(trade(2))
    assert [e.items[0]["i"] for e in buffer.drain()] == ["2"]


def test_kept_trades_long_before_the_owners_last_record_are_not_written_again() -> None:
    """The owner writes a symbol in order: what the standby received well before
    the owner's newest record in Kafka was written, and may be older than the
    ids the seed read back (a standby keeps 30 s; the seed reads 500 ids)."""
    trades_route = route("v5", "publicTrade", item_mapper, dedup="trade_id")
    old = decode(json.dumps({"topic": "publicTrade.BTCUSDT", "ts": 1, "type": "snapshot",
                             "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1",
                                       "i": "1", "BT": False}]}), "v5", Stamp(10_000, 1))
    new = decode(json.dumps({"topic": "publicTrade.BTCUSDT", "ts": 1, "type": "snapshot",
                             "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1",
                                       "i": "2", "BT": False}]}), "v5", Stamp(30_000, 1))
    todo, _ = select([old, new], lambda e: trades_route, {},
                     written_until={"BTCUSDT": 31_000})
    assert todo == [new]
