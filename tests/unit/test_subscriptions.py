"""Subscription bookkeeping (connector/bybit/subscriptions.py), without sockets:
ack matching by req_id, isolation of a failed batch, retry with backoff,
ack timeouts, implicit acks, resubscribes; legacy matching by topic/symbol."""

from __future__ import annotations

import itertools
import json

from connector.bybit.family import AckInfo
from connector.bybit.legacy.family import LegacyFamily
from connector.bybit.legacy.protocol import Subscription
from connector.bybit.subscriptions import Subscriptions
from connector.bybit.v5.family import V5Family


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def v5_book(symbols: tuple[str, ...], clock: Clock) -> Subscriptions:
    return Subscriptions("t", "v5", V5Family("v5"),
                         (Subscription("v5", "publicTrade", symbols),),
                         ack_timeout=10.0, retry_initial=1.0, retry_max=8.0, clock=clock)


def started(subs: Subscriptions) -> list:
    sends = subs.start()
    for request, attempt in sends:
        subs.sent(request, attempt)
    return sends


def test_acks_match_by_req_id_in_any_order() -> None:
    clock = Clock()
    subs = v5_book(tuple(f"S{i:02d}USDT" for i in range(15)), clock)
    (a, _), (b, _) = started(subs)
    assert subs.on_ack(AckInfo(True, "", req_id=b.req_id)) == []
    states = subs.states()
    assert states[("publicTrade", "S14USDT")] == "active"
    assert states[("publicTrade", "S00USDT")] == "pending"
    subs.on_ack(AckInfo(True, "", req_id=a.req_id))
    assert subs.all_active()


def test_a_failed_batch_is_isolated_then_the_bad_topic_retried_with_backoff() -> None:
    clock = Clock()
    subs = v5_book(("BTCUSDT", "BADUSDT"), clock)
    ((batch, _),) = started(subs)
    parts = subs.on_ack(AckInfo(False, "error:handler not found", req_id=batch.req_id))
    assert [json.loads(r.text)["args"] for r, _ in parts] == [["publicTrade.BTCUSDT"],
                                                             ["publicTrade.BADUSDT"]]
    for request, attempt in parts:
        subs.sent(request, attempt)
    good, bad = (r for r, _ in parts)
    subs.on_ack(AckInfo(True, "", req_id=good.req_id))
    assert subs.on_ack(AckInfo(False, "error:handler not found", req_id=bad.req_id)) == []
    assert subs.states() == {("publicTrade", "BTCUSDT"): "active",
                             ("publicTrade", "BADUSDT"): "failed"}
    clock.now = 0.9
    assert subs.tick() == []
    clock.now = 1.0
    ((retry, attempt),) = subs.tick()
    assert attempt == 1 and retry.pairs == bad.pairs and retry.req_id != bad.req_id
    subs.sent(retry, attempt)
    subs.on_ack(AckInfo(False, "still bad", req_id=retry.req_id))
    clock.now = 2.9
    assert subs.tick() == []  # 2 s after the second failure
    clock.now = 3.0
    assert [a for _, a in subs.tick()] == [2]


def test_ack_timeout_is_retried_unless_data_arrived() -> None:
    clock = Clock()
    subs = v5_book(("BTCUSDT", "ETHUSDT"), clock)
    started(subs)
    subs.on_data("publicTrade", "BTCUSDT")
    subs.on_data("publicTrade", "ETHUSDT")
    assert subs.all_active()
    clock.now = 11.0
    assert subs.tick() == []  # implicitly acked: nothing to retry

    subs2 = v5_book(("BTCUSDT",), clock)
    clock.now = 0.0
    started(subs2)
    clock.now = 10.5
    assert subs2.tick() == []
    assert subs2.states()[("publicTrade", "BTCUSDT")] == "failed"
    clock.now = 11.5
    assert len(subs2.tick()) == 1


def test_resubscribe_returns_unsubscribe_then_subscribe_and_swallows_its_ack() -> None:
    clock = Clock()
    subs = v5_book(("BTCUSDT",), clock)
    ((req, _),) = started(subs)
    subs.on_ack(AckInfo(True, "", req_id=req.req_id))
    subs.resubscribe(("publicTrade", "BTCUSDT"))
    subs.resubscribe(("publicTrade", "BTCUSDT"))  # asked twice, done once
    texts, sends = subs.take_resubscribes()
    assert [json.loads(t)["op"] for t in texts] == ["unsubscribe"]
    assert len(sends) == 1 and not subs.all_active()
    assert subs.on_ack(AckInfo(True, "", req_id=json.loads(texts[0])["req_id"])) == []
    subs.sent(*sends[0])
    subs.on_ack(AckInfo(True, "", req_id=sends[0][0].req_id))
    assert subs.all_active()
    assert subs.take_resubscribes() == ([], [])


def test_repeated_resubscribes_of_one_topic_back_off() -> None:
    """A book whose every snapshot fails must not make us hammer Bybit: the
    first restart is at once, one within ``retry_max`` of the last waits
    ``retry_initial``, doubling; a quiet ``retry_max`` resets it."""
    clock = Clock()
    subs = v5_book(("BTCUSDT", "ETHUSDT"), clock)
    started(subs)
    pair = ("publicTrade", "BTCUSDT")
    due_at = []
    for _ in range(6):
        subs.resubscribe(pair)
        while not subs.take_resubscribes()[1]:
            clock.now += 0.25
        due_at.append(clock.now)
    assert [b - a for a, b in itertools.pairwise(due_at)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    subs.resubscribe(("publicTrade", "ETHUSDT"))  # another topic: its own schedule
    assert len(subs.take_resubscribes()[1]) == 1
    clock.now += 8.0 + 8.0  # quiet for retry_max since the last restart
    subs.resubscribe(pair)
    assert len(subs.take_resubscribes()[1]) == 1


def test_close_makes_everything_pending() -> None:
    clock = Clock()
    subs = v5_book(("BTCUSDT",), clock)
    ((req, _),) = started(subs)
    subs.on_ack(AckInfo(True, "", req_id=req.req_id))
    subs.close()
    assert subs.states() == {("publicTrade", "BTCUSDT"): "pending"}


def test_legacy_errors_that_name_nothing_answer_the_oldest_request() -> None:
    clock = Clock()
    subs = Subscriptions("t", "v2", LegacyFamily("v2"),
                         (Subscription("v2", "trade", ("BTCUSDT", "ETHUSDT")),),
                         ack_timeout=10.0, retry_initial=1.0, retry_max=8.0, clock=clock)
    started(subs)
    assert subs.on_ack(AckInfo(True, "", topic="trade", symbol="ETHUSDT")) == []
    assert subs.on_ack(AckInfo(False, "code -100010: Invalid Symbols!")) == []
    assert subs.states() == {("trade", "BTCUSDT"): "failed", ("trade", "ETHUSDT"): "active"}
