"""Bybit v5 requests, signing, planning and the connection budget (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.bybit.budget import ConnectBudget
from connector.bybit.legacy.protocol import Subscription
from connector.bybit.v5 import protocol
from connector.bybit.v5.family import V5Family

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def test_auth_signature_matches_the_test_vector() -> None:
    want = sample("auth_request")
    text = protocol.build_auth("8fK2pQm7Zr4TxW1bNc", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
                               1760000010000, "auth-0001")
    assert json.loads(text) == want


def test_auth_expires_is_fresh_and_in_the_future() -> None:
    assert protocol.auth_expires(1_000) == 1_000 + protocol.AUTH_EXPIRES_MS
    fam = V5Family("v5-private")
    a, b = (json.loads(fam.auth("k", "s")) for _ in range(2))
    assert a["args"][1] <= b["args"][1] and a["req_id"] != b["req_id"]


def test_subscribe_requests_have_at_most_10_args_and_unique_req_ids() -> None:
    symbols = tuple(f"S{i:03d}USDT" for i in range(23))
    fam = V5Family("v5")
    reqs = fam.subscribe([Subscription("v5", "orderbook", symbols, depth=50),
                          Subscription("v5", "kline", ("BTCUSDT",), interval="1")])
    msgs = [json.loads(r.text) for r in reqs]
    assert [len(m["args"]) for m in msgs] == [10, 10, 4]
    assert all(m["op"] == "subscribe" for m in msgs)
    assert msgs[0]["args"][0] == "orderbook.50.S000USDT"
    assert msgs[-1]["args"][-1] == "kline.1.BTCUSDT"
    ids = [m["req_id"] for m in msgs] + [json.loads(fam.ping(0))["req_id"]]
    assert len(set(ids)) == len(ids)
    assert [r.req_id for r in reqs] == [m["req_id"] for m in msgs]
    assert reqs[-1].pairs[-1] == ("kline.1", "BTCUSDT")


def test_private_topics_go_one_per_request() -> None:
    fam = V5Family("v5-private")
    reqs = fam.subscribe([Subscription("v5-private", t) for t in
                          ("order", "order.spot", "execution.fast", "wallet")])
    assert [json.loads(r.text)["args"] for r in reqs] == [
        ["order"], ["order.spot"], ["execution.fast"], ["wallet"]]
    assert reqs[0].pairs == (("order", ""),)


def test_isolation_resends_one_arg_per_request_with_fresh_ids() -> None:
    fam = V5Family("v5")
    (req,) = fam.subscribe([Subscription("v5", "publicTrade", ("BTCUSDT", "ETHUSDT"))])
    parts = fam.isolate(req)
    assert [json.loads(p.text)["args"] for p in parts] == [["publicTrade.BTCUSDT"],
                                                           ["publicTrade.ETHUSDT"]]
    assert len({req.req_id, *(p.req_id for p in parts)}) == 3
    assert fam.isolate(parts[0]) == [parts[0]]
    renewed = fam.renew(parts[0])
    assert renewed.pairs == parts[0].pairs and renewed.req_id != parts[0].req_id


def test_resubscribe_is_unsubscribe_then_subscribe_of_one_topic() -> None:
    unsub, sub = V5Family("v5").resubscribe(("orderbook.50", "BTCUSDT"))
    assert json.loads(unsub[0].text)["op"] == "unsubscribe"
    assert json.loads(sub[0].text) == {"op": "subscribe", "req_id": sub[0].req_id,
                                       "args": ["orderbook.50.BTCUSDT"]}


def test_ping_shape() -> None:
    msg = json.loads(V5Family("v5").ping(123))
    assert msg["op"] == "ping" and isinstance(msg["req_id"], str)


def test_endpoints() -> None:
    assert protocol.endpoint("mainnet", "v5") == "wss://stream.bybit.com/v5/public/spot"
    assert protocol.endpoint("testnet", "v5") == "wss://stream-testnet.bybit.com/v5/public/spot"
    assert protocol.endpoint("mainnet", "v5-private") == "wss://stream.bybit.com/v5/private"


def test_plan_splits_by_pairs() -> None:
    subs = [Subscription("v5", "publicTrade", tuple(f"S{i}USDT" for i in range(5)))]
    groups = protocol.plan_connections(subs, max_pairs=2)
    assert [[s.symbols for s in g] for g in groups] == [
        [("S0USDT", "S1USDT")], [("S2USDT", "S3USDT")], [("S4USDT",)]]


def test_plan_keeps_every_connection_under_the_args_budget() -> None:
    symbols = tuple(f"SYM{i:05d}USDT" for i in range(3000))
    subs = [Subscription("v5", "orderbook", symbols, depth=1000),
            Subscription("v5", "publicTrade", symbols)]
    groups = protocol.plan_connections(subs, max_pairs=10_000)
    assert len(groups) > 1
    seen = []
    for group in groups:
        args = [protocol.arg("v5", s.topic_id, sym) for s in group for sym in s.symbols]
        # the budget holds even if every arg is sent twice (isolation re-sends)
        assert 2 * protocol.args_chars(args) <= protocol.MAX_ARGS_CHARS
        seen += args
    assert len(seen) == 6000 and len(set(seen)) == 6000


def test_budget_allows_the_limit_then_says_how_long_to_wait() -> None:
    now = [0.0]
    budget = ConnectBudget(limit=3, window=300.0, clock=lambda: now[0])
    assert [budget.reserve("h") for _ in range(3)] == [0.0, 0.0, 0.0]
    now[0] = 100.0
    assert budget.reserve("h") == pytest.approx(200.0)
    assert budget.reserve("other") == 0.0  # per host
    assert budget.used("h") == 3
    now[0] = 300.5
    assert budget.reserve("h") == 0.0 and budget.used("h") == 1


def test_budget_is_shared_and_thread_safe() -> None:
    import threading
    budget = ConnectBudget(limit=500, window=300.0)
    results: list[float] = []
    lock = threading.Lock()

    def go() -> None:
        for _ in range(100):
            r = budget.reserve("stream.bybit.com")
            with lock:
                results.append(r)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r == 0.0) == 500
