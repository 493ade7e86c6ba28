"""The local exchange's Bybit v5 paths, from a plain WebSocket client's side.

A real server on an ephemeral port; requests and frames are plain JSON over
websocket-client (no connector code), compared with the shapes in
``tests/samples/v5`` and with the exchange's own ground truth (``book_at``).
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websocket

from connector.exchange import ExchangeServer
from connector.exchange.__main__ import main as exchange_main
from connector.exchange.v5 import V5Settings, signature

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"
PUBLIC, PRIVATE = "/v5/public/spot", "/v5/private"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


class Client:
    """A plain v5 client: send JSON, read frames, keep what arrived."""

    def __init__(self, exchange: ExchangeServer, path: str, query: str = "") -> None:
        self.ws = websocket.create_connection(exchange.url + path + query, timeout=5)
        self.frames: list[dict[str, Any]] = []

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        self.ws.settimeout(timeout)
        frame: dict[str, Any] = json.loads(self.ws.recv())
        self.frames.append(frame)
        return frame

    def reply(self, obj: Any) -> dict[str, Any]:
        """Send a request; the next frame without a ``topic`` (data is kept)."""
        self.send(obj)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            frame = self.recv()
            if "topic" not in frame:
                return frame
        raise AssertionError("no reply")

    def collect(self, seconds: float) -> list[dict[str, Any]]:
        start, out = time.monotonic(), []
        while time.monotonic() - start < seconds:
            try:
                out.append(self.recv(timeout=max(0.01, seconds - (time.monotonic() - start))))
            except websocket.WebSocketTimeoutException:
                break
        return out

    def until(self, cond: Callable[[dict[str, Any]], bool], timeout: float = 10.0
              ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = self.recv(timeout=max(0.05, deadline - time.monotonic()))
            if cond(frame):
                return frame
        raise AssertionError("frame not seen in time")

    def data(self, topic: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("topic") == topic]

    def close(self) -> None:
        self.ws.close()


def auth(client: Client, exchange: ExchangeServer, **kw: Any) -> dict[str, Any]:
    expires = int(time.time() * 1000) + 10_000
    msg = {"op": "auth", "args": [exchange.api_key, expires,
                                  signature(exchange.api_secret, expires)], **kw}
    return client.reply(msg)


def server(**v5: Any) -> ExchangeServer:
    rate = v5.pop("rate", None)
    return ExchangeServer(port=0, record_frames=200_000, rate=rate, private_interval=0.05,
                          v5=V5Settings(**v5))


@pytest.fixture(scope="module")
def exchange() -> Iterator[ExchangeServer]:
    with server() as ex:
        yield ex


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def connect(made: list[Client], exchange: ExchangeServer, path: str = PUBLIC,
            query: str = "") -> Client:
    c = Client(exchange, path, query)
    made.append(c)
    return c


def closed(c: Client, timeout: float = 5.0) -> bool:
    """True when the server closed the socket (a close frame or an abort)."""
    try:
        c.ws.settimeout(timeout)
        return c.ws.recv() == ""
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        return True


def keys(obj: dict[str, Any]) -> list[str]:
    return list(obj)


# -- acks, pongs, failures -----------------------------------------------------------------

def test_public_acks_and_pongs_have_bybits_shapes(exchange: ExchangeServer,
                                                  clients: list[Client]) -> None:
    c = connect(clients, exchange)
    ack = c.reply({"req_id": "sub-0001", "op": "subscribe", "args": ["tickers.BTCUSDT"]})
    want = sample("subscribe_ack_success_public_spot.json")
    assert keys(ack) == keys(want) and ack["req_id"] == "sub-0001" and ack["success"] is True
    assert ack["ret_msg"] == "subscribe" and ack["op"] == "subscribe"
    ack = c.reply({"op": "subscribe", "args": ["priceLimit.BTCUSDT"]})
    assert keys(ack) == ["success", "ret_msg", "conn_id", "op"]  # req_id only when sent
    pong = c.reply({"op": "ping"})
    assert pong == {**sample("pong_public_spot.json"), "conn_id": ack["conn_id"]}
    pong = c.reply({"req_id": "100001", "op": "ping"})
    assert keys(pong) == ["success", "ret_msg", "conn_id", "req_id", "op"]
    assert pong["op"] == "ping" and pong["ret_msg"] == "pong" and pong["req_id"] == "100001"
    unsub = c.reply(sample("unsubscribe_request.json") | {"args": ["tickers.BTCUSDT"]})
    assert keys(unsub) == keys(sample("unsubscribe_ack_public_spot_INFERRED.json"))
    assert unsub["success"] is True and unsub["ret_msg"] == "unsubscribe"
    assert c.reply({"op": "ping"})["conn_id"] == ack["conn_id"]
    c.collect(0.3)  # in-flight ticker frames drain, then only priceLimit arrives
    later = c.collect(1.0)
    assert later and all(f["topic"] == "priceLimit.BTCUSDT" for f in later)


@pytest.mark.parametrize("topic", [
    "orderbook.25.BTCUSDT", "orderbook.50.btcusdt", "kline.2.BTCUSDT", "kline.1m.BTCUSDT",
    "trade.BTCUSDT", "order", "wallet", "publicTrade.INVALIDX", "orderbook.full.BTCUSDT"])
def test_unknown_topics_fail_with_handler_not_found(exchange: ExchangeServer,
                                                    clients: list[Client], topic: str) -> None:
    c = connect(clients, exchange)
    ack = c.reply({"req_id": "sub-0002", "op": "subscribe", "args": [topic]})
    want = sample("subscribe_ack_failure_handler_not_found.json")
    assert keys(ack) == keys(want)
    assert ack["success"] is False and ack["ret_msg"] == f"error:handler not found,topic:{topic}"


def test_one_bad_topic_fails_the_whole_request(exchange: ExchangeServer,
                                               clients: list[Client]) -> None:
    c = connect(clients, exchange)
    ack = c.reply({"op": "subscribe", "args": ["tickers.ETHUSDT", "orderbook.25.ETHUSDT"]})
    assert ack["success"] is False and ack["ret_msg"].endswith("topic:orderbook.25.ETHUSDT")
    assert c.collect(0.5) == []  # nothing of the request was subscribed
    assert c.reply({"op": "subscribe", "args": ["tickers.ETHUSDT"]})["success"] is True


def test_already_subscribed_fails_and_the_subscription_keeps_streaming(
        exchange: ExchangeServer, clients: list[Client]) -> None:
    c = connect(clients, exchange)
    assert c.reply({"op": "subscribe", "args": ["tickers.BTCUSDT"]})["success"] is True
    ack = c.reply({"req_id": "sub-0003", "op": "subscribe", "args": ["tickers.BTCUSDT"]})
    assert keys(ack) == keys(sample("subscribe_ack_failure_already_subscribed.json"))
    assert ack["ret_msg"] == "error:already subscribed,topic:tickers.BTCUSDT"
    dup = c.reply({"op": "subscribe", "args": ["tickers.ETHUSDT", "tickers.ETHUSDT"]})
    assert dup["ret_msg"] == "error:already subscribed,topic:tickers.ETHUSDT"
    frames = c.collect(0.6)
    assert frames and {f["topic"] for f in frames} == {"tickers.BTCUSDT"}


def test_more_than_ten_args_fail(exchange: ExchangeServer, clients: list[Client]) -> None:
    c = connect(clients, exchange)
    args = [f"kline.1.SYM{i}USDT" for i in range(11)]
    ack = c.reply({"req_id": "sub-0004", "op": "subscribe", "args": args})
    assert ack == {**sample("subscribe_ack_failure_too_many_args_UNVERIFIED.json"),
                   "conn_id": ack["conn_id"]}
    assert c.reply({"op": "subscribe", "args": args[:10]})["success"] is True


@pytest.mark.parametrize("refunds", [True, False])
def test_args_budget_is_cumulative_per_connection(clients: list[Client], refunds: bool) -> None:
    with server(args_budget=50, args_budget_message="budget spent",
                args_budget_refunds=refunds) as ex:
        c = connect(clients, ex)
        # each topic costs its length: 15 + 15 + 15 = 45 of 50
        for sym in ("AAAUSDT", "BBBUSDT", "CCCUSDT"):
            assert c.reply({"op": "subscribe", "args": [f"kline.1.{sym}"]})["success"]
        assert c.reply({"op": "unsubscribe", "args": ["kline.1.AAAUSDT"]})["success"]
        ack = c.reply({"op": "subscribe", "args": ["kline.1.DDDUSDT"]})
        if refunds:  # 30 subscribed now + 15
            assert ack["success"] is True
            ack = c.reply({"op": "subscribe", "args": ["kline.1.EEEUSDT"]})  # 45 + 15
        assert ack["success"] is False and ack["ret_msg"] == "budget spent"
        assert c.reply({"op": "unsubscribe", "args": ["kline.1.BBBUSDT"]})["success"]
        again = c.reply({"op": "subscribe", "args": ["kline.1.EEEUSDT"]})
        assert again["success"] is refunds
        other = connect(clients, ex)  # the budget is per connection
        assert other.reply({"op": "subscribe", "args": ["kline.1.DDDUSDT"]})["success"]


def test_invalid_json_and_unknown_op_leave_the_socket_open(exchange: ExchangeServer,
                                                            clients: list[Client]) -> None:
    c = connect(clients, exchange)
    bad = c.reply("not json")
    assert bad["success"] is False
    assert bad["ret_msg"].startswith("Failed to decode incoming data")
    assert c.reply("[1,2]")["ret_msg"].startswith("Failed to decode incoming data")
    assert c.reply({"op": "hello"})["ret_msg"] == "error:invalid op"
    assert c.reply({"op": "ping"})["ret_msg"] == "pong"


def test_injected_rejection_and_pong_blackout(exchange: ExchangeServer,
                                             clients: list[Client]) -> None:
    c = connect(clients, exchange)
    exchange.v5.reject_next_subscribe(1)
    assert c.reply({"op": "subscribe", "args": ["tickers.BTCUSDT"]})["success"] is False
    assert c.reply({"op": "subscribe", "args": ["tickers.BTCUSDT"]})["success"] is True
    exchange.pong_blackout(0.8)
    c.send({"op": "ping", "req_id": "dark"})
    frames = c.collect(0.5)
    assert frames and all("topic" in f for f in frames)  # data, but no pong
    time.sleep(0.4)
    assert c.reply({"op": "ping", "req_id": "lit"})["req_id"] == "lit"


# -- private: auth, pong, topics -----------------------------------------------------------

def test_private_auth_pong_and_acks(exchange: ExchangeServer, clients: list[Client]) -> None:
    c = connect(clients, exchange, PRIVATE)
    pong = c.reply({"req_id": "100001", "op": "ping"})
    assert keys(pong) == keys(sample("pong_private.json")) and pong["op"] == "pong"
    assert pong["req_id"] == "100001" and abs(int(pong["args"][0]) - time.time() * 1000) < 60_000
    assert keys(c.reply({"op": "ping"})) == ["op", "args", "conn_id"]
    early = c.reply({"op": "subscribe", "args": ["order.spot"]})
    assert early["success"] is False and early["ret_msg"] == "Request not authorized"
    expired = c.reply(sample("auth_request.json") | {"args": [
        exchange.api_key, 1760000010000, signature(exchange.api_secret, 1760000010000)]})
    assert keys(expired) == ["req_id", *keys(sample("auth_response_failure.json"))]
    assert expired["success"] is False and expired["ret_msg"] == "Params Error"
    expires = int(time.time() * 1000) + 10_000
    wrong = c.reply({"op": "auth", "args": [exchange.api_key, expires, "0" * 64]})
    assert keys(wrong) == keys(sample("auth_response_failure.json"))
    assert wrong["success"] is False and wrong["ret_msg"] == "Params Error"
    ok = auth(c, exchange, req_id="auth-0001")
    assert keys(ok) == keys(sample("auth_response_success.json"))
    assert ok["success"] is True and ok["ret_msg"] == "" and ok["req_id"] == "auth-0001"
    ack = c.reply(sample("subscribe_request_private_spot.json"))
    assert keys(ack) == keys(sample("subscribe_ack_success_private.json"))
    assert ack["success"] is True and ack["ret_msg"] == "" and ack["req_id"] == "psub-0001"
    mixed = c.reply({"op": "subscribe", "args": ["execution", "execution.fast.spot"]})
    assert mixed["success"] is False and "all-in-one" in mixed["ret_msg"]
    public = c.reply({"op": "subscribe", "args": ["tickers.BTCUSDT"]})
    assert public["ret_msg"] == "error:handler not found,topic:tickers.BTCUSDT"


def test_the_documented_test_vector_authenticates(clients: list[Client]) -> None:
    vector = sample("auth_request.json")
    key, secret = vector["args"][0], "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    assert signature(secret, vector["args"][1]) == vector["args"][2]
    with ExchangeServer(port=0, api_key=key, api_secret=secret) as ex:
        c = connect(clients, ex, PRIVATE)
        assert c.reply(vector)["ret_msg"] == "Params Error"  # its expires is in the past
        assert auth(c, ex)["success"] is True


@pytest.mark.parametrize("mode", ["reject", "close", "silent"])
def test_fail_auth_modes(clients: list[Client], mode: str) -> None:
    with server() as ex:
        ex.v5.fail_auth(mode)
        c = connect(clients, ex, PRIVATE)
        if mode == "reject":
            assert auth(c, ex)["ret_msg"] == "Params Error"
        elif mode == "close":
            c.send({"op": "auth", "args": ["demo-key", 1, "x"]})
            assert closed(c)
        else:
            c.send({"op": "auth", "args": ["demo-key", 1, "x"]})
            with pytest.raises(websocket.WebSocketTimeoutException):
                c.recv(timeout=0.7)
        ex.v5.fail_auth(None)
        c2 = connect(clients, ex, PRIVATE)
        assert auth(c2, ex)["success"] is True


def test_private_flow_order_execution_wallet_by_subscribed_form(
        exchange: ExchangeServer, clients: list[Client]) -> None:
    split, whole = connect(clients, exchange, PRIVATE), connect(clients, exchange, PRIVATE)
    auth(split, exchange)
    auth(whole, exchange)
    assert split.reply({"op": "subscribe", "args": [
        "order.spot", "execution.spot", "execution.fast.spot", "wallet"]})["success"]
    assert whole.reply({"op": "subscribe", "args": ["order", "execution"]})["success"]
    seen_new: set[str] = set()

    def filled_after_new(f: dict[str, Any]) -> bool:
        """A Filled order whose whole life this client saw (the account is shared)."""
        if f.get("topic") != "order.spot":
            return False
        row = f["data"][0]
        if row["orderStatus"] == "New":
            seen_new.add(row["orderId"])
        return row["orderStatus"] == "Filled" and row["orderId"] in seen_new

    filled = split.until(filled_after_new, timeout=30)
    split.collect(0.3)
    whole.collect(0.3)
    topics = [f["topic"] for f in split.frames if "topic" in f]
    assert set(topics) == {"order.spot", "execution.spot", "execution.fast.spot", "wallet"}
    assert {f["topic"] for f in whole.frames if "topic" in f} == {"order", "execution"}
    # shapes as the samples (key order of envelope and rows)
    for name, topic in (("order_spot.json", "order.spot"), ("wallet.json", "wallet"),
                        ("execution_spot.json", "execution.spot"),
                        ("execution_fast_spot.json", "execution.fast.spot")):
        want, got = sample(name), split.data(topic)[0]
        assert keys(got) == keys(want)
        assert keys(got["data"][0]) == keys(want["data"][0])
    # order → execution → wallet for the filled order, with consistent quantities
    order_id = filled["data"][0]["orderId"]
    fills = [r for f in split.data("execution.spot") for r in f["data"]
             if r["orderId"] == order_id]
    assert sum(Decimal(r["execQty"]) for r in fills) == Decimal(filled["data"][0]["qty"])
    first_exec = next(i for i, f in enumerate(split.frames) if f.get("topic") == "execution.spot"
                      and f["data"][0]["orderId"] == order_id)
    first_order = next(i for i, f in enumerate(split.frames) if f.get("topic") == "order.spot"
                       and f["data"][0]["orderId"] == order_id)
    assert first_order < first_exec
    assert any(f.get("topic") == "wallet" for f in split.frames[first_exec:])
    new = [f for f in split.data("order.spot") if f["data"][0]["orderId"] == order_id]
    assert new[0]["data"][0]["orderStatus"] == "New"
    fast_ids = {r["execId"] for f in split.data("execution.fast.spot") for r in f["data"]}
    assert {r["execId"] for r in fills} <= fast_ids
    assert all("id" not in f for f in split.data("execution.fast.spot"))
    exec_ids = [r["execId"] for f in split.data("execution.spot") for r in f["data"]]
    assert len(exec_ids) == len(set(exec_ids))


def test_private_topics_get_no_snapshot(exchange: ExchangeServer,
                                        clients: list[Client]) -> None:
    exchange.v5.pause()
    try:
        c = connect(clients, exchange, PRIVATE)
        auth(c, exchange)
        assert c.reply({"op": "subscribe", "args": ["wallet", "order"]})["success"]
        assert c.collect(0.5) == []
    finally:
        exchange.v5.pause(False)


# -- books --------------------------------------------------------------------------------

def rebuild(frames: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, list[str]],
                                                            dict[str, list[str]]]]:
    """Apply snapshots and deltas as a careful client would; yield (u, bids, asks)."""
    bids: dict[str, list[str]] = {}
    asks: dict[str, list[str]] = {}
    last = None
    for f in frames:
        d = f["data"]
        if f["type"] == "snapshot":
            bids = {lv[0]: lv[1:] for lv in d["b"]}
            asks = {lv[0]: lv[1:] for lv in d["a"]}
        else:
            assert last is not None and d["u"] == last + 1, (last, d["u"])
            for side, levels in ((bids, d["b"]), (asks, d["a"])):
                for lv in levels:
                    if all(Decimal(x) == 0 for x in lv[1:]):
                        assert lv[0] in side, f"delete of a price not in the book: {lv}"
                        del side[lv[0]]
                    else:
                        side[lv[0]] = lv[1:]
        last = d["u"]
        yield last, bids, asks


def as_levels(side: dict[str, list[str]], best_high: bool) -> list[list[str]]:
    return [[p, *side[p]] for p in sorted(side, key=Decimal, reverse=best_high)]


@pytest.mark.parametrize("depth", [50, 200, 1000, "rpi"])
def test_books_snapshot_then_contiguous_deltas_equal_book_at_every_u(
        exchange: ExchangeServer, clients: list[Client], depth: int | str) -> None:
    topic = f"orderbook.{depth}.BTCUSDT"
    n = 50 if depth == "rpi" else int(depth)
    c = connect(clients, exchange)
    assert c.reply({"op": "subscribe", "args": [topic]})["success"]
    c.collect(2.5 if depth in (1000, 200) else 1.5)
    frames = c.data(topic)
    assert len(frames) >= 5 and frames[0]["type"] == "snapshot"
    assert all(f["type"] == "delta" for f in frames[1:])
    want = sample(f"orderbook_{depth}_delta.json")
    assert keys(frames[1]) == keys(want) and keys(frames[1]["data"]) == keys(want["data"])
    seqs = [f["data"]["seq"] for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    checked = 0
    for u, bids, asks in rebuild(frames):
        assert len(bids) == n and len(asks) == n
        assert max(map(Decimal, bids)) < min(map(Decimal, asks))
        assert exchange.v5.book_at("BTCUSDT", depth, u) == (as_levels(bids, True),
                                                            as_levels(asks, False))
        checked += 1
    assert checked == len(frames)


def test_two_clients_see_the_same_u_for_the_same_update(exchange: ExchangeServer,
                                                        clients: list[Client]) -> None:
    topic = "orderbook.50.ETHUSDT"
    a, b = connect(clients, exchange), connect(clients, exchange)
    assert a.reply({"op": "subscribe", "args": [topic]})["success"]
    a.collect(0.3)
    assert b.reply({"op": "subscribe", "args": [topic]})["success"]
    a.collect(0.5)
    b.collect(0.5)
    exchange.v5.pause()
    try:
        a.collect(0.3)
        b.collect(0.3)
        current = exchange.v5.current_u("ETHUSDT", 50)
    finally:
        exchange.v5.pause(False)
    fa, fb = a.data(topic), b.data(topic)
    snap = fb[0]
    assert snap["type"] == "snapshot"
    by_u = {f["data"]["u"]: f for f in fa}
    later = [f for f in fb[1:]]
    assert later and all(by_u[f["data"]["u"]] == f for f in later)  # identical deltas
    assert list(rebuild(fb))[-1][1:] == list(rebuild(fa))[-1][1:]
    assert current == fa[-1]["data"]["u"]


def test_frames_sent_are_recorded_per_connection(exchange: ExchangeServer,
                                                 clients: list[Client]) -> None:
    c = connect(clients, exchange)
    ack = c.reply({"op": "subscribe", "args": ["orderbook.200.BTCUSDT"]})
    c.collect(0.8)
    sent = exchange.v5.sent_frames(conn_id=ack["conn_id"])
    got = c.data("orderbook.200.BTCUSDT")
    n = min(len(sent), len(got))  # the server may have sent one more after collect ended
    assert sent and got and sent[:n] == got[:n] and len(sent) - n <= 2
    legacy_view = exchange.sent_frames("v5")  # the server-wide record has v5 data too
    assert all(f in legacy_view for f in sent[-3:])
    everything = exchange.v5.sent_frames(conn_id=ack["conn_id"], data_only=False)
    assert everything[0] == ack
    stats = exchange.v5.stats()
    assert stats["topics"]["orderbook.200.BTCUSDT"]["frames"] >= len(sent)
    assert stats["counters"]["frames.v5.orderbook.200.BTCUSDT"] >= len(sent)


def test_gap_and_restart_controls(exchange: ExchangeServer, clients: list[Client]) -> None:
    topic = "orderbook.50.SOLUSDT"
    c = connect(clients, exchange)
    assert c.reply({"op": "subscribe", "args": [topic]})["success"]
    c.collect(0.3)
    assert exchange.v5.gap("SOLUSDT", 50) == 1
    c.collect(0.4)
    us = [f["data"]["u"] for f in c.data(topic)]
    jumps = [b - a for a, b in itertools.pairwise(us)]
    assert jumps.count(2) == 1 and set(jumps) == {1, 2}
    skipped = exchange.v5.stats()["topics"][topic]["skipped"]
    assert len(skipped) == 1 and skipped[0] not in us
    assert exchange.v5.book_at("SOLUSDT", 50, skipped[0])  # applied, just not sent
    mark = len(c.frames)
    assert exchange.v5.restart("SOLUSDT", 50) == 1
    c.collect(0.4)
    after = [f for f in c.frames[mark:] if f.get("topic") == topic]
    restart = next(i for i, f in enumerate(after) if f["type"] == "snapshot")
    assert all(f["data"]["u"] > 2 for f in after[:restart])  # in flight before the restart
    after = after[restart:]
    assert after[0]["data"]["u"] == 1
    assert after[1]["type"] == "delta" and after[1]["data"]["u"] == 2
    u, bids, asks = list(rebuild(after))[-1]
    assert exchange.v5.book_at("SOLUSDT", 50, u) == (as_levels(bids, True),
                                                     as_levels(asks, False))
    base = exchange.url.replace("ws:", "http:") + "/control/v5/"
    with urllib.request.urlopen(base + f"book?symbol=SOLUSDT&depth=50&u={u}", timeout=5) as r:
        assert json.load(r)["result"] == {"b": as_levels(bids, True), "a": as_levels(asks, False)}
    with urllib.request.urlopen(base + "gap?symbol=SOLUSDT&depth=50", timeout=5) as r:
        assert json.load(r)["result"] == 1


def test_duplicate_and_resnapshot_controls(exchange: ExchangeServer,
                                          clients: list[Client]) -> None:
    topic = "orderbook.200.XRPUSDT"
    c = connect(clients, exchange)
    assert c.reply({"op": "subscribe", "args": [topic]})["success"]
    c.collect(0.5)
    exchange.v5.pause()
    try:
        c.collect(0.3)
        last = c.data(topic)[-1]
        assert exchange.v5.duplicate("XRPUSDT", 200) == 1
        assert c.recv() == last
        assert exchange.v5.resnapshot("XRPUSDT", 200) == 1
        snap = c.recv()
        assert snap["type"] == "snapshot" and snap["data"]["u"] == last["data"]["u"]
        u, bids, asks = list(rebuild(c.data(topic)[:-2]))[-1]
        assert u == snap["data"]["u"]
        assert (as_levels(bids, True), as_levels(asks, False)) == (snap["data"]["b"],
                                                                   snap["data"]["a"])
    finally:
        exchange.v5.pause(False)


def test_level_one_is_snapshot_only_and_resent_unchanged(clients: list[Client]) -> None:
    with server(l1_change_prob=0.0, l1_resend=0.3) as ex:
        c = connect(clients, ex)
        assert c.reply({"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]})["success"]
        frames = c.collect(1.2)
        assert 3 <= len(frames) <= 6  # the snapshot, then one resend every 0.3 s
        assert all(f["type"] == "snapshot" for f in frames)
        first = frames[0]
        assert keys(first) == keys(sample("orderbook_1_snapshot.json"))
        for f in frames[1:]:
            assert f["data"] == first["data"] and f["cts"] == first["cts"]
            assert f["ts"] >= first["ts"]
        assert ex.v5.resend_l1("BTCUSDT") == 1
        again = c.recv(timeout=0.25)  # now, not after the next 0.3 s period
        assert again["data"]["u"] == first["data"]["u"]


def test_level_one_changes_carry_new_u(exchange: ExchangeServer, clients: list[Client]) -> None:
    c = connect(clients, exchange)
    assert c.reply({"op": "subscribe", "args": ["orderbook.1.ADAUSDT"]})["success"]
    frames = c.collect(0.5)
    us = [f["data"]["u"] for f in frames]
    assert all(f["type"] == "snapshot" for f in frames) and len(set(us)) >= 3
    assert us == sorted(us)
    for f in frames:
        assert len(f["data"]["b"]) == 1 and len(f["data"]["a"]) == 1
        assert Decimal(f["data"]["b"][0][0]) < Decimal(f["data"]["a"][0][0])
        assert ex_book(exchange, f) == (f["data"]["b"], f["data"]["a"])


def ex_book(exchange: ExchangeServer, f: dict[str, Any]) -> tuple[Any, Any]:
    return exchange.v5.book_at(f["data"]["s"], 1, f["data"]["u"])


# -- other public topics ------------------------------------------------------------------

def test_trades_are_unique_increasing_with_no_history(exchange: ExchangeServer,
                                                      clients: list[Client]) -> None:
    c = connect(clients, exchange)
    assert c.reply({"op": "subscribe", "args": ["publicTrade.BTCUSDT"]})["success"]
    c.until(lambda f: len(f.get("data", ())) > 1, timeout=15)  # several trades in one frame
    frames = c.data("publicTrade.BTCUSDT")
    rows = [r for f in frames for r in f["data"]]
    ids = [int(r["i"]) for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    want = sample("publicTrade_spot.json")
    assert keys(frames[0]) == keys(want) and keys(rows[0]) == keys(want["data"][0])
    assert all(r["S"] in ("Buy", "Sell") and r["s"] == "BTCUSDT" for r in rows)
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs)


def test_tickers_price_limit_and_klines(clients: list[Client]) -> None:
    # candles of 1 minute * 0.004 = 240 ms; every feed pushes 20 times a second
    with server(kline_scale=0.004, rate=20) as ex:
        c = connect(clients, ex)
        assert c.reply({"op": "subscribe", "args": [
            "tickers.BTCUSDT", "priceLimit.BTCUSDT", "kline.1.BTCUSDT"]})["success"]
        c.until(lambda f: f.get("topic") == "kline.1.BTCUSDT" and f["data"][0]["confirm"])
        c.until(lambda f: f.get("topic") == "kline.1.BTCUSDT" and f["data"][0]["confirm"])
        c.until(lambda f: f.get("topic") == "kline.1.BTCUSDT")  # the next candle
        ticker = c.data("tickers.BTCUSDT")[0]
        want = sample("tickers_spot.json")
        assert keys(ticker) == keys(want) and keys(ticker["data"]) == keys(want["data"])
        limit = c.data("priceLimit.BTCUSDT")[0]
        assert keys(limit) == ["topic", "ts", "data"]
        assert keys(limit["data"]) == ["symbol", "buyLmt", "sellLmt"]
        klines = c.data("kline.1.BTCUSDT")
        want = sample("kline_spot.json")
        assert keys(klines[0]) == keys(want) and keys(klines[0]["data"][0]) == keys(
            want["data"][0])
        confirmed = [f["data"][0] for f in klines if f["data"][0]["confirm"]]
        assert len(confirmed) >= 2
        for k in confirmed:
            assert k["end"] - k["start"] == 239
            later = [f["data"][0] for f in klines if f["data"][0]["start"] > k["start"]]
            assert later and later[0]["start"] == k["end"] + 1


# -- connections --------------------------------------------------------------------------

def test_idle_connections_are_closed(clients: list[Client]) -> None:
    with server(idle_timeout=1.0) as ex:
        idle = connect(clients, ex)
        pinging = connect(clients, ex)
        fed = connect(clients, ex)
        assert fed.reply({"op": "subscribe", "args": ["tickers.BTCUSDT"]})["success"]
        start = time.monotonic()
        while time.monotonic() - start < 3.0:
            pinging.reply({"op": "ping"})
            fed.collect(0.3)
        assert closed(idle, 1)
        assert pinging.reply({"op": "ping"})["ret_msg"] == "pong"
        assert fed.recv()["topic"] == "tickers.BTCUSDT"
        assert ex.v5.stats()["counters"]["idle_closes"] == 1


def test_close_idle_now_and_drop_controls(exchange: ExchangeServer,
                                          clients: list[Client]) -> None:
    idle = connect(clients, exchange)
    active = connect(clients, exchange)
    time.sleep(0.6)
    active.reply({"op": "ping"})
    assert exchange.v5.close_idle(0.5) >= 1
    assert closed(idle, 2)
    assert active.reply({"op": "ping"})["ret_msg"] == "pong"
    private = connect(clients, exchange, PRIVATE)
    base = exchange.url.replace("ws:", "http:")
    with urllib.request.urlopen(base + "/control/drop?stream=v5-private", timeout=5) as r:
        assert json.load(r)["result"] >= 1
    assert closed(private, 2)
    assert active.reply({"op": "ping"})["ret_msg"] == "pong"
    with urllib.request.urlopen(base + "/control/v5/stats", timeout=5) as r:
        assert json.load(r)["result"]["clients"]["v5"] >= 1


@pytest.mark.parametrize("path", [PUBLIC, PRIVATE])
def test_protocol_pings_are_answered(exchange: ExchangeServer, clients: list[Client],
                                     path: str) -> None:
    c = connect(clients, exchange, path)
    c.ws.ping("are-you-there")
    c.ws.settimeout(5)
    frame = c.ws.recv_data_frame(control_frame=True)[1]
    assert frame.opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"are-you-there"


def test_max_active_time_is_accepted_on_private(exchange: ExchangeServer,
                                                clients: list[Client]) -> None:
    c = connect(clients, exchange, PRIVATE, "?max_active_time=1m")
    assert c.reply({"op": "ping"})["op"] == "pong"


def test_cli_help_mentions_the_v5_paths(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        exchange_main(["--help"], prog="bybit-kafka-connector exchange")
    out = capsys.readouterr().out
    assert "/v5/public/spot" in out and "/v5/private" in out and "/control/v5/" in out
