"""The connection loop on Bybit v5, against a small scripted v5 server in this
file (server side only: it parses requests with plain json and answers with
the shapes of tests/samples/v5, replaying sample data frames)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from connector.bybit.connection import Connection, ConnectionSettings
from connector.bybit.events import Event, V5Data
from connector.bybit.legacy.protocol import Subscription

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"
KEY, SECRET = "v5-key", "v5-secret"


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class ScriptedV5:
    """Public spot at /v5/public/spot, private at /v5/private. Answers pings with
    the endpoint's pong shape, acks by req_id (a batch with one bad topic fails
    whole, as seen on Bybit), sends a snapshot per subscribed book topic."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.reject_auth = False
        self.silent_pongs = False
        self.clients: set[ServerConnection] = set()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> ScriptedV5:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [m for _, m in list(self.requests) if m.get("op") == op]

    def drop(self) -> int:
        async def go() -> int:
            victims = list(self.clients)
            for c in victims:
                c.transport.abort()
            return len(victims)
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, ping_interval=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            for c in list(self.clients):
                c.transport.abort()

    async def _handle(self, conn: ServerConnection) -> None:
        path = conn.request.path if conn.request else ""
        private = path.startswith("/v5/private")
        self.clients.add(conn)
        active: set[str] = set()
        authed = False
        try:
            async for message in conn:
                msg = json.loads(message)
                self.requests.append((path, msg))
                op, req_id = msg.get("op"), msg.get("req_id")
                if op == "ping":
                    if self.silent_pongs:
                        continue
                    pong = ({"req_id": req_id, "op": "pong", "args": [str(now_ms())],
                             "conn_id": "p"} if private else
                            {"success": True, "ret_msg": "pong", "conn_id": "c", "op": "ping"})
                    await conn.send(json.dumps(pong))
                elif op == "auth":
                    key, expires, sig = msg["args"]
                    want = hmac.new(SECRET.encode(), f"GET/realtime{expires}".encode(),
                                    hashlib.sha256).hexdigest()
                    authed = (not self.reject_auth and key == KEY and sig == want
                              and expires > now_ms())
                    await conn.send(json.dumps({"req_id": req_id, "success": authed,
                                                "ret_msg": "" if authed else "Params Error",
                                                "op": "auth", "conn_id": "p"}))
                elif op in ("subscribe", "unsubscribe"):
                    await self._op(conn, op, req_id, msg["args"], active, private, authed)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(conn)

    async def _op(self, conn: ServerConnection, op: str, req_id: str, args: list[str],
                  active: set[str], private: bool, authed: bool) -> None:
        def ack(ok: bool, text: str) -> str:
            return json.dumps({"success": ok, "ret_msg": text, "conn_id": "c",
                               "req_id": req_id, "op": op})
        if private and not authed:
            await conn.send(ack(False, "Request not authorized"))
            return
        if op == "unsubscribe":
            active.difference_update(args)
            await conn.send(ack(True, "unsubscribe"))
            return
        if len(args) > 10 and not private:
            await conn.send(ack(False, "args size >10"))
            return
        bad = [a for a in args if "INVALID" in a]
        if bad:
            await conn.send(ack(False, f"error:handler not found,topic:{bad[0]}"))
            return
        dup = [a for a in args if a in active]
        if dup:
            await conn.send(ack(False, f"error:already subscribed,topic:{dup[0]}"))
            return
        active.update(args)
        await conn.send(ack(True, "" if private else "subscribe"))
        for topic in args:
            if topic.startswith("orderbook.50."):
                frame = sample("orderbook_50_snapshot")
                frame["topic"] = topic
                await conn.send(json.dumps(frame))
            elif topic.startswith("publicTrade."):
                frame = sample("publicTrade_spot")
                frame["topic"] = topic
                await conn.send(json.dumps(frame))
            elif topic == "wallet":
                await conn.send(json.dumps(sample("wallet")))


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def data(self) -> list[V5Data]:
        with self.lock:
            return [e for e in self.events if isinstance(e, V5Data)]


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def server() -> Iterator[ScriptedV5]:
    with ScriptedV5() as s:
        yield s


def connect(server: ScriptedV5, stream: str, subs: list[Subscription],
            **kw: Any) -> tuple[Connection, Collector]:
    path = "/v5/private" if stream == "v5-private" else "/v5/public/spot"
    settings: dict[str, Any] = dict(
        name=f"{stream}-test-{time.monotonic_ns()}", stream=stream, url=server.url(path),
        subscriptions=tuple(subs), ping_interval=0.1, pong_timeout=0.6, ack_timeout=1.0,
        read_timeout=0.05, backoff_initial=0.5, backoff_max=30.0, resubscribe_initial=0.2,
        auth_retry_initial=0.5, auth_retry_max=1.0, auth_timeout=1.0)
    settings.update(kw)
    events = Collector()
    return Connection(ConnectionSettings(**settings), events).start(), events


def test_public_subscribe_in_batches_of_10_and_spot_pongs(server: ScriptedV5) -> None:
    symbols = tuple(f"S{i:02d}USDT" for i in range(12))
    conn, events = connect(server, "v5", [Subscription("v5", "orderbook", symbols, depth=50),
                                          Subscription("v5", "publicTrade", ("BTCUSDT",))])
    try:
        wait_for(lambda: conn.all_subscribed)
        subs = server.ops("subscribe")
        assert [len(m["args"]) for m in subs] == [10, 3]
        assert len({m["req_id"] for m in subs}) == 2
        wait_for(lambda: len(events.data()) >= 13)
        assert {(d.topic_id, d.symbol) for d in events.data()} >= {
            ("orderbook.50", "S00USDT"), ("publicTrade", "BTCUSDT")}
        time.sleep(1.0)  # ~10 pings, answered with the spot shape
        assert metric("bybit_connector_pong_timeouts_total", stream="v5",
                      connection=conn.name) == 0
        assert metric("bybit_connector_heartbeat_rtt_seconds_count", stream="v5",
                      connection=conn.name) >= 5
    finally:
        conn.stop()


def test_a_failed_batch_is_isolated_and_the_bad_topic_retried(server: ScriptedV5) -> None:
    labels = {"stream": "v5", "topic": "publicTrade", "reason": "error_ack"}
    before = metric("bybit_connector_subscription_failures_total", **labels)
    conn, _ = connect(server, "v5", [Subscription("v5", "publicTrade",
                                                  ("BTCUSDT", "INVALIDX", "ETHUSDT"))])
    try:
        wait_for(lambda: metric("bybit_connector_subscription_failures_total",
                                **labels) >= before + 2)  # counted and retried
        states = conn.subscription_states()
        assert states[("publicTrade", "BTCUSDT")] == "active"
        assert states[("publicTrade", "ETHUSDT")] == "active"
        assert states[("publicTrade", "INVALIDX")] == "failed"
        args = [m["args"] for m in server.ops("subscribe")]
        assert args[0] == ["publicTrade.BTCUSDT", "publicTrade.INVALIDX", "publicTrade.ETHUSDT"]
        assert ["publicTrade.BTCUSDT"] in args and ["publicTrade.ETHUSDT"] in args
        assert args.count(["publicTrade.INVALIDX"]) >= 2
        assert conn.is_up and not conn.all_subscribed
    finally:
        conn.stop()


def test_resubscribe_one_topic_unsubscribes_then_subscribes(server: ScriptedV5) -> None:
    conn, events = connect(server, "v5", [Subscription("v5", "orderbook",
                                                       ("BTCUSDT", "ETHUSDT"), depth=50)])
    try:
        wait_for(lambda: conn.all_subscribed and len(events.data()) >= 2)
        assert conn.owns("orderbook.50", "BTCUSDT")
        conn.resubscribe("orderbook.50", "BTCUSDT")
        wait_for(lambda: len(events.data()) >= 3)
        ops = [(m["op"], m["args"]) for _, m in server.requests if m["op"] != "ping"]
        assert ops[-2:] == [("unsubscribe", ["orderbook.50.BTCUSDT"]),
                            ("subscribe", ["orderbook.50.BTCUSDT"])]
        assert events.data()[-1].type == "snapshot" and events.data()[-1].symbol == "BTCUSDT"
        wait_for(lambda: conn.all_subscribed)
    finally:
        conn.stop()


def test_private_auth_before_subscribe_and_private_pongs(server: ScriptedV5) -> None:
    conn, events = connect(server, "v5-private",
                           [Subscription("v5-private", "order.spot"),
                            Subscription("v5-private", "wallet")],
                           api_key=KEY, api_secret=SECRET)
    try:
        wait_for(lambda: conn.all_subscribed)
        ops = [m["op"] for _, m in server.requests if m["op"] != "ping"]
        assert ops[0] == "auth" and ops[1:] == ["subscribe", "subscribe"]
        wait_for(lambda: any(d.topic == "wallet" for d in events.data()))
        time.sleep(0.5)
        assert metric("bybit_connector_pong_timeouts_total", stream="v5-private",
                      connection=conn.name) == 0
        # a fresh expires on every (re)connect
        server.drop()
        wait_for(lambda: len(server.ops("auth")) == 2)
        wait_for(lambda: conn.all_subscribed)
        first, second = (m["args"][1] for m in server.ops("auth"))
        assert second > first
    finally:
        conn.stop()


def test_private_auth_failure_is_surfaced_and_retried_slowly(server: ScriptedV5) -> None:
    server.reject_auth = True
    conn, _ = connect(server, "v5-private", [Subscription("v5-private", "wallet")],
                      api_key=KEY, api_secret=SECRET)
    try:
        wait_for(lambda: metric("bybit_connector_auth_failures_total", connection=conn.name,
                                reason="rejected") >= 2, timeout=5)
        assert not conn.is_up and "Params Error" in (conn.last_error or "")
        assert SECRET not in (conn.last_error or "")
        n = len(server.ops("auth"))
        time.sleep(0.4)
        assert len(server.ops("auth")) - n <= 1  # slow, no retry storm
        assert not server.ops("subscribe")  # never subscribes unauthenticated
        server.reject_auth = False
        wait_for(lambda: conn.all_subscribed, timeout=5)
    finally:
        conn.stop()


def test_missing_pong_recycles_the_connection(server: ScriptedV5) -> None:
    conn, _ = connect(server, "v5", [Subscription("v5", "publicTrade", ("BTCUSDT",))])
    try:
        wait_for(lambda: conn.all_subscribed)
        server.silent_pongs = True
        wait_for(lambda: metric("bybit_connector_pong_timeouts_total", stream="v5",
                                connection=conn.name) >= 1, timeout=5)
        server.silent_pongs = False
        wait_for(lambda: conn.all_subscribed, timeout=5)
    finally:
        conn.stop()


def test_ten_drops_after_healthy_sessions_reconnect_at_once(server: ScriptedV5) -> None:
    conn, _ = connect(server, "v5", [Subscription("v5", "publicTrade", ("BTCUSDT",))])
    try:
        times = []
        for _ in range(10):
            wait_for(lambda: conn.all_subscribed, timeout=60)
            connects = metric("bybit_connector_connects_total", stream="v5",
                              connection=conn.name)
            assert server.drop() == 1
            dropped = time.monotonic()
            wait_for(lambda n=connects: metric("bybit_connector_connects_total", stream="v5",
                                               connection=conn.name) > n, timeout=60)
            times.append(time.monotonic() - dropped)
        print("v5 reconnect after drop (s):", " ".join(f"{t:.2f}" for t in times))
        assert max(times) < 1.0, times
    finally:
        conn.stop()


def test_already_subscribed_counts_as_success(server: ScriptedV5) -> None:
    symbols = tuple(f"S{i:02d}USDT" for i in range(10))
    labels = {"stream": "v5", "topic": "publicTrade", "reason": "error_ack"}
    before = metric("bybit_connector_subscription_failures_total", **labels)
    conn, _ = connect(server, "v5", [Subscription("v5", "publicTrade", symbols),
                                     Subscription("v5", "publicTrade", ("S00USDT",))])
    try:
        wait_for(lambda: conn.all_subscribed and len(server.ops("subscribe")) == 2)
        time.sleep(0.3)
        assert conn.all_subscribed
        assert metric("bybit_connector_subscription_failures_total", **labels) == before
        assert len(server.ops("subscribe")) == 2  # no isolation, no retry
    finally:
        conn.stop()


def test_reconnects_respect_the_shared_connection_budget(server: ScriptedV5) -> None:
    from connector.bybit.budget import ConnectBudget
    budget = ConnectBudget(limit=3, window=2.0)
    conn, _ = connect(server, "v5", [Subscription("v5", "publicTrade", ("BTCUSDT",))],
                      budget=budget)
    try:
        wait_for(lambda: conn.all_subscribed)
        start = time.monotonic()
        for _ in range(3):
            wait_for(lambda: conn.all_subscribed, timeout=10)
            server.drop()
            time.sleep(0.05)
        wait_for(lambda: conn.all_subscribed, timeout=10)
        elapsed = time.monotonic() - start
        # 4 connects in one 2 s window: the 4th waited for the window to roll
        assert metric("bybit_connector_connect_budget_waits_total", stream="v5",
                      connection=conn.name) >= 1
        assert elapsed >= 1.0, elapsed
        assert budget.used(f"127.0.0.1:{server.port}") <= 3
    finally:
        conn.stop()
