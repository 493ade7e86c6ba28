"""The WebSocket client against the local exchange: subscribe, acks, faults,
reconnects, heartbeat, auth, compression, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connector.bybit.connection import Connection, ConnectionSettings
from connector.bybit.events import Event, MarketData, PrivateData, Undecodable
from connector.bybit.legacy.frames import market_topic_id
from connector.bybit.legacy.protocol import Subscription
from connector.exchange import ExchangeServer

pytestmark = pytest.mark.integration

PATHS = {"v1": "/spot/quote/ws/v1", "v2": "/spot/quote/ws/v2", "private": "/spot/ws"}


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, cls: type) -> list[Any]:
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]

    def topics(self) -> set[tuple[str, str]]:
        return {(market_topic_id(e), e.symbol) for e in self.of(MarketData)}


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0, rate=20, private_interval=0.1) as server:
        yield server


def connect(exchange: ExchangeServer, stream: str, subs: list[Subscription],
            **kw: Any) -> tuple[Connection, Collector]:
    settings = dict(name=f"{stream}-test-{time.monotonic_ns()}", stream=stream,
                    url=exchange.url + PATHS[stream], subscriptions=tuple(subs),
                    ping_interval=0.2, pong_timeout=0.6, ack_timeout=1.0, read_timeout=0.05,
                    backoff_initial=0.05, backoff_max=0.2, resubscribe_initial=0.2,
                    auth_retry_initial=0.3, auth_retry_max=0.5, auth_timeout=1.0)
    settings.update(kw)
    events = Collector()
    conn = Connection(ConnectionSettings(**settings), events)  # type: ignore[arg-type]
    return conn.start(), events


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_public_topic_is_subscribed_and_received(exchange: ExchangeServer) -> None:
    v1 = [Subscription("v1", t, ("BTCUSDT", "ETHUSDT")) for t in
          ("trade", "realtimes", "depth", "diffDepth")]
    v1 += [Subscription("v1", "kline", ("BTCUSDT",), interval="1m"),
           Subscription("v1", "kline", ("BTCUSDT",), interval="1M"),
           Subscription("v1", "mergedDepth", ("ETHUSDT",), dump_scale=1),
           Subscription("v1", "lt", ("BTC3LUSDTNAV",))]
    v2 = [Subscription("v2", t, ("BTCUSDT",)) for t in
          ("depth", "trade", "bookTicker", "realtimes")]
    v2 += [Subscription("v2", "kline", ("BTCUSDT",), interval="5m")]
    c1, e1 = connect(exchange, "v1", v1)
    c2, e2 = connect(exchange, "v2", v2)
    try:
        want1 = {p for s in v1 for p in s.pairs()}
        want2 = {p for s in v2 for p in s.pairs()}
        wait_for(lambda: want1 <= e1.topics() and want2 <= e2.topics())
        wait_for(lambda: c1.all_subscribed and c2.all_subscribed)
        assert c1.is_up and c2.is_up
    finally:
        c1.stop()
        c2.stop()


def test_a_failed_subscription_is_isolated_and_retried(exchange: ExchangeServer) -> None:
    good = Subscription("v2", "trade", ("BTCUSDT",))
    bad = Subscription("v2", "depth", ("INVALIDX",))
    before = metric("bybit_connector_subscription_failures_total", stream="v2", topic="depth",
                    reason="error_ack")
    conn, events = connect(exchange, "v2", [bad, good])
    try:
        wait_for(lambda: ("trade", "BTCUSDT") in events.topics())
        wait_for(lambda: metric("bybit_connector_subscription_failures_total", stream="v2",
                                topic="depth", reason="error_ack") >= before + 2)  # retried
        states = conn.subscription_states()
        assert states[("trade", "BTCUSDT")] == "active"
        assert states[("depth", "INVALIDX")] == "failed"
        assert not conn.all_subscribed and conn.is_up
    finally:
        conn.stop()


def test_rejected_subscribe_recovers_on_retry(exchange: ExchangeServer) -> None:
    exchange.reject_next_subscribe(1)
    conn, events = connect(exchange, "v1", [Subscription("v1", "trade", ("BTCUSDT",))])
    try:
        wait_for(lambda: conn.all_subscribed, timeout=5)
        assert ("trade", "BTCUSDT") in events.topics() or wait_for(
            lambda: ("trade", "BTCUSDT") in events.topics())
    finally:
        conn.stop()


def test_server_drop_reconnects_and_resubscribes(exchange: ExchangeServer) -> None:
    sub = Subscription("v1", "trade", ("BTCUSDT",))
    conn, events = connect(exchange, "v1", [sub])
    try:
        wait_for(lambda: conn.all_subscribed and len(events.of(MarketData)) > 2)
        connects = metric("bybit_connector_connects_total", stream="v1", connection=conn.name)
        assert exchange.drop("v1") == 1
        dropped_at = time.monotonic()
        wait_for(lambda: not conn.is_up or metric(
            "bybit_connector_connects_total", stream="v1", connection=conn.name) > connects)
        count = len(events.of(MarketData))
        wait_for(lambda: conn.all_subscribed and len(events.of(MarketData)) > count + 2)
        recovered = time.monotonic() - dropped_at
        print(f"drop -> data flowing again in {recovered * 1000:.0f} ms")
        assert recovered < 3
        assert metric("bybit_connector_connects_total", stream="v1",
                      connection=conn.name) == connects + 1
        assert metric("bybit_connector_disconnects_total", stream="v1", connection=conn.name,
                      reason="server_closed") + metric(
            "bybit_connector_disconnects_total", stream="v1", connection=conn.name,
            reason="network_error") >= 1
        # the resubscribe replayed 60 trades with f=true
        firsts = [e for e in events.of(MarketData) if e.first]
        assert len(firsts) == 2 and len(firsts[1].items) == 60
    finally:
        conn.stop()


def test_missing_pong_recycles_a_silent_connection(exchange: ExchangeServer) -> None:
    """No pong and no frame at all for pong_timeout: the connection is dead."""
    conn, _ = connect(exchange, "v2", [Subscription("v2", "bookTicker", ("BTCUSDT",))])
    try:
        wait_for(lambda: conn.all_subscribed)
        exchange.pause_feeds()  # silent: no data either
        exchange.pong_blackout(1.0)
        wait_for(lambda: metric("bybit_connector_pong_timeouts_total", stream="v2",
                                connection=conn.name) >= 1, timeout=5)
        wait_for(lambda: conn.all_subscribed, timeout=5)
        assert metric("bybit_connector_disconnects_total", stream="v2", connection=conn.name,
                      reason="pong_timeout") >= 1
        assert metric("bybit_connector_heartbeat_rtt_seconds_count", stream="v2",
                      connection=conn.name) >= 1
    finally:
        conn.stop()


def test_server_ping_is_answered_and_not_passed_on(exchange: ExchangeServer) -> None:
    conn, events = connect(exchange, "v1", [Subscription("v1", "realtimes", ("BTCUSDT",))])
    try:
        wait_for(lambda: conn.all_subscribed)
        exchange.server_pongs.clear()
        exchange.server_ping("v1")
        wait_for(lambda: len(exchange.server_pongs) == 1)
        assert not events.of(Undecodable)
    finally:
        conn.stop()


def test_private_auth_and_events(exchange: ExchangeServer) -> None:
    subs = [Subscription("private", t) for t in ("executionReport", "ticketInfo")]
    conn, events = connect(exchange, "private", subs, api_key="demo-key",
                           api_secret="demo-secret")
    try:
        wait_for(lambda: conn.all_subscribed)
        wait_for(lambda: {"ticketInfo", "executionReport", "outboundAccountInfo"} <= {
            ev["e"] for e in events.of(PrivateData) for ev in e.events})
    finally:
        conn.stop()


@pytest.mark.parametrize("mode", ["reject", "close", "silent"])
def test_auth_failure_is_reported_and_retried_slowly(exchange: ExchangeServer,
                                                     mode: str) -> None:
    exchange.fail_auth(mode)
    reason = {"reject": "rejected", "close": "closed_after_auth", "silent": "timeout"}[mode]
    conn, _ = connect(exchange, "private", [Subscription("private", "ticketInfo")],
                      api_key="demo-key", api_secret="demo-secret", auth_timeout=0.3)
    try:
        wait_for(lambda: metric("bybit_connector_auth_failures_total", connection=conn.name,
                                reason=reason) >= 2, timeout=5)
        assert not conn.is_up and "auth" in (conn.last_error or "")
        attempts = exchange.counters["auth_attempts"]
        time.sleep(0.5)
        assert exchange.counters["auth_attempts"] - attempts <= 3  # slow, not a tight loop
        exchange.fail_auth(None)
        wait_for(lambda: conn.all_subscribed, timeout=5)
    finally:
        conn.stop()


def test_wrong_secret_fails_auth(exchange: ExchangeServer) -> None:
    conn, _ = connect(exchange, "private", [Subscription("private", "ticketInfo")],
                      api_key="demo-key", api_secret="wrong")
    try:
        wait_for(lambda: metric("bybit_connector_auth_failures_total", connection=conn.name,
                                reason="rejected") >= 1)
        assert not conn.is_up
    finally:
        conn.stop()


@pytest.mark.parametrize("codec", ["gzip", "zlib", "deflate"])
def test_compressed_frames(codec: str) -> None:
    with ExchangeServer(port=0, rate=20, compression=codec) as exchange:
        conn, events = connect(exchange, "v1",
                               [Subscription("v1", "diffDepth", ("BTCUSDT",), binary=True)])
        try:
            wait_for(lambda: len(events.of(MarketData)) >= 3)
            data = events.of(MarketData)
            assert data[0].first and len(data[0].items[0]["b"]) == 200
            assert not data[1].first and isinstance(data[0].raw, bytes)
            assert not events.of(Undecodable)
        finally:
            conn.stop()


@pytest.mark.parametrize(("kind", "reason"), [("text", "invalid_json"),
                                              ("binary", "decompress_failed"),
                                              ("unknown", "unknown_shape")])
def test_garbage_frames_reach_the_handler(exchange: ExchangeServer, kind: str,
                                          reason: str) -> None:
    conn, events = connect(exchange, "v1", [Subscription("v1", "trade", ("BTCUSDT",))])
    try:
        wait_for(lambda: conn.all_subscribed)
        exchange.send_garbage(kind, "v1")
        wait_for(lambda: bool(events.of(Undecodable)))
        assert events.of(Undecodable)[0].reason == reason
        assert conn.is_up  # a bad frame never takes the connection down
    finally:
        conn.stop()


def test_stop_is_bounded_and_leaves_no_threads(exchange: ExchangeServer) -> None:
    before = set(threading.enumerate())
    conns = [connect(exchange, "v1", [Subscription("v1", "trade", ("BTCUSDT",))])[0]
             for _ in range(3)]
    wait_for(lambda: all(c.all_subscribed for c in conns))
    started = time.monotonic()
    for c in conns:
        c.stop()
    assert time.monotonic() - started < 3
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, leaked


def test_unreachable_server_backs_off_without_blocking_stop() -> None:
    settings = ConnectionSettings(name="nowhere", stream="v1", url="ws://127.0.0.1:9/x",
                                  subscriptions=(Subscription("v1", "trade", ("BTCUSDT",)),),
                                  backoff_initial=0.05, backoff_max=0.1, connect_timeout=0.5)
    conn = Connection(settings, lambda e: None).start()
    wait_for(lambda: metric("bybit_connector_reconnect_attempts_total", stream="v1",
                            connection="nowhere") >= 3)
    started = time.monotonic()
    conn.stop()
    assert time.monotonic() - started < 2 and not conn.is_alive()


def _reconnect_times(exchange: ExchangeServer, conn: Connection, stream: str,
                     drops: int) -> list[float]:
    """Drop the connection ``drops`` times, each after it is fully subscribed;
    return the seconds from each drop to the next fully subscribed session."""
    times = []
    for _ in range(drops):
        wait_for(lambda: conn.all_subscribed, timeout=60)
        connects = metric("bybit_connector_connects_total", stream=stream, connection=conn.name)
        assert exchange.drop(stream) == 1
        dropped_at = time.monotonic()
        wait_for(lambda n=connects: metric("bybit_connector_connects_total", stream=stream,
                                           connection=conn.name) > n, timeout=60)
        times.append(time.monotonic() - dropped_at)
    return times


def test_backoff_resets_after_a_healthy_session(exchange: ExchangeServer) -> None:
    """Each drop after a fully subscribed session reconnects at once; the
    backoff grows only while attempts fail (production backoff settings)."""
    conn, _ = connect(exchange, "v1", [Subscription("v1", "trade", ("BTCUSDT",))],
                      backoff_initial=0.5, backoff_max=30.0)
    try:
        times = _reconnect_times(exchange, conn, "v1", 10)
        print("reconnect after drop (s):", " ".join(f"{t:.2f}" for t in times))
        assert max(times) < 1.0, times
    finally:
        conn.stop()


def test_pong_with_the_servers_own_time_is_accepted(exchange: ExchangeServer) -> None:
    """The exchange answers ping 1535975085052 with its own clock (not an echo);
    any pong counts, so no connection is recycled by pong timeout."""
    conn, _ = connect(exchange, "v2", [Subscription("v2", "bookTicker", ("BTCUSDT",))],
                      ping_interval=0.1, pong_timeout=0.5)
    try:
        wait_for(lambda: conn.all_subscribed)
        pings = exchange.counters["pings"]
        time.sleep(2.0)
        assert exchange.counters["pings"] - pings >= 5
        assert metric("bybit_connector_pong_timeouts_total", stream="v2",
                      connection=conn.name) == 0
        assert metric("bybit_connector_heartbeat_rtt_seconds_count", stream="v2",
                      connection=conn.name) >= 5
    finally:
        conn.stop()


def test_after_an_auth_failure_a_healthy_session_restores_the_normal_schedule(
        exchange: ExchangeServer) -> None:
    """Auth failures retry on the slow schedule; once a session succeeds, a
    plain drop reconnects at once again."""
    exchange.fail_auth("reject")
    conn, _ = connect(exchange, "private", [Subscription("private", "ticketInfo")],
                      api_key="demo-key", api_secret="demo-secret",
                      auth_retry_initial=3.0, auth_retry_max=6.0,
                      backoff_initial=0.5, backoff_max=30.0)
    try:
        wait_for(lambda: metric("bybit_connector_auth_failures_total", connection=conn.name,
                                reason="rejected") >= 1)
        exchange.fail_auth(None)
        times = _reconnect_times(exchange, conn, "private", 3)
        print("reconnect after drop (s):", " ".join(f"{t:.2f}" for t in times))
        assert max(times) < 1.0, times
    finally:
        conn.stop()


def test_a_pong_behind_a_backlog_does_not_end_the_connection() -> None:
    """Issue 20.2: a connector reading behind its socket finds its pong behind the
    backlog. Any frame read proves the connection alive, so it is not dropped (which
    would lose everything in flight), and every trade the exchange wrote arrives.

    Scaled down from 40k trades/s on the default client with a 20 s ping interval and
    a 10 s pong timeout: a 1 s ping interval, a 0.5 s pong timeout, and a handler
    slowed to about half the offered frame rate, so the read lag passes the pong
    timeout within about a second. (With pings more often than the pong timeout the
    late pong of an earlier ping would hide the bug.)"""
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    pong_timeout = 0.5
    with ExchangeServer(port=0, rate=150, record_frames=200_000, idle_timeout=None) as ex:
        events = Collector()

        def slow_sink(event: Event) -> None:
            time.sleep(0.003)  # ~330 frames/s handled, 600 offered
            events(event)

        settings = ConnectionSettings(
            name=f"v1-backlog-{time.monotonic_ns()}", stream="v1",
            url=ex.url + PATHS["v1"], subscriptions=(Subscription("v1", "trade", symbols),),
            ping_interval=2 * pong_timeout, pong_timeout=pong_timeout,  # the defaults' 2:1
            read_timeout=0.05)
        conn = Connection(settings, slow_sink).start()
        name = conn.name
        try:
            wait_for(lambda: conn.all_subscribed)

            def lag() -> float:  # the test's own measure: sendTime of the last frame handled
                last = events.of(MarketData)[-1:]
                return (last[0].stamp.wall_ms - last[0].send_time_ms) / 1000 if last else 0.0

            def timeouts() -> float:
                return metric("bybit_connector_pong_timeouts_total", stream="v1",
                              connection=name)

            behind = wait_for(lambda: lag() > 4 * pong_timeout or timeouts() > 0, timeout=15)
            assert timeouts() == 0, "the connector dropped its own connection"
            assert metric("bybit_connector_read_lag_seconds", stream="v1",
                          connection=name) > 2 * pong_timeout  # the metric shows it
            ex.pause_feeds()
            sent = {item["v"] for f in ex.sent_frames("v1") if f.get("topic") == "trade"
                    for item in f["data"]}
            wait_for(lambda: sent <= {i["v"] for e in events.of(MarketData) for i in e.items},
                     timeout=60)
        finally:
            conn.stop()
        assert metric("bybit_connector_disconnects_total", stream="v1", connection=name,
                      reason="pong_timeout") == 0
        assert metric("bybit_connector_pong_timeouts_total", stream="v1", connection=name) == 0
        assert metric("bybit_connector_connects_total", stream="v1", connection=name) == 1
        assert metric("bybit_connector_heartbeat_rtt_seconds_count", stream="v1",
                      connection=name) >= 1  # pongs were read, late
        print(f"read lag passed {4 * pong_timeout:.1f} s after {behind:.1f} s; "
              f"{len(sent)} trades sent, all received")
