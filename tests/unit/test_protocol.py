"""Subscribe/auth messages byte for byte, chunking, signing, connection plans, backoff."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random

from connector.bybit.backoff import backoff, is_retryable
from connector.bybit.legacy import protocol
from connector.bybit.legacy.protocol import Subscription, build_subscribe, plan_connections


def texts(sub: Subscription, **kw: int) -> list[str]:
    return [r.text for r in build_subscribe(sub, **kw)]


def test_v1_subscribe_messages() -> None:
    assert texts(Subscription("v1", "trade", ("BTCUSDT", "ETHUSDT"))) == [
        '{"symbol":"BTCUSDT,ETHUSDT","topic":"trade","event":"sub","params":{"binary":false}}']
    assert texts(Subscription("v1", "kline", ("BTCUSDT",), interval="1M", binary=True)) == [
        '{"symbol":"BTCUSDT","topic":"kline_1M","event":"sub","params":{"binary":true}}']
    assert texts(Subscription("v1", "mergedDepth", ("ETHUSDT",), dump_scale=1)) == [
        '{"symbol":"ETHUSDT","topic":"mergedDepth","event":"sub",'
        '"params":{"binary":false,"dumpScale":1}}']


def test_v1_chunks_symbol_lists() -> None:
    symbols = tuple(f"S{i:03d}USDT" for i in range(45))
    requests = build_subscribe(Subscription("v1", "trade", symbols), max_symbols=20)
    assert [len(r.pairs) for r in requests] == [20, 20, 5]
    assert json.loads(requests[2].text)["symbol"] == ",".join(symbols[40:])


def test_v2_one_message_per_symbol() -> None:
    assert texts(Subscription("v2", "kline", ("BTCUSDT", "ETHUSDT"), interval="1m")) == [
        '{"topic":"kline","event":"sub","params":{"symbol":"BTCUSDT","klineType":"1m",'
        '"binary":false}}',
        '{"topic":"kline","event":"sub","params":{"symbol":"ETHUSDT","klineType":"1m",'
        '"binary":false}}']
    assert texts(Subscription("v2", "depth", ("BTCUSDT",))) == [
        '{"topic":"depth","event":"sub","params":{"symbol":"BTCUSDT","binary":false}}']


def test_cancel_and_heartbeat_messages() -> None:
    assert json.loads(build_subscribe(Subscription("v1", "trade", ("A1",)), event="cancel")[0]
                      .text)["event"] == "cancel"
    assert protocol.build_ping(1535975085052) == '{"ping":1535975085052}'
    assert protocol.build_pong(7) == '{"pong":7}'


def test_auth_signature() -> None:
    expected = hmac.new(b"secret", b"GET/realtime1662350400000", hashlib.sha256).hexdigest()
    assert protocol.sign("secret", 1662350400000) == expected
    assert json.loads(protocol.build_auth("key", "secret", 1662350400000)) == {
        "op": "auth", "args": ["key", 1662350400000, expected]}


def test_plan_connections_caps_pairs_per_connection() -> None:
    subs = [Subscription("v1", "trade", tuple(f"S{i}" for i in range(250))),
            Subscription("v1", "depth", ("A1", "B1"))]
    plan = plan_connections("v1", subs, cap=100)
    assert [sum(len(s.symbols) for s in group) for group in plan] == [100, 100, 52]
    assert plan[2][1].topic == "depth"
    assert plan_connections("v1", subs[1:], cap=100) == [subs[1:]]


def test_backoff_first_immediate_then_growing_capped() -> None:
    delays = list(itertools.islice(backoff(0.5, 8, rng=random.Random(1)), 12))
    assert delays[0] == 0
    assert all(0.25 <= d <= 8 for d in delays[1:])
    assert delays[5] > delays[1]
    assert max(delays) <= 8 and min(delays[6:]) >= 4


def test_retryable() -> None:
    import websocket

    assert is_retryable(ConnectionRefusedError())
    assert is_retryable(websocket.WebSocketConnectionClosedException())
    assert not is_retryable(ValueError("bad url"))
    assert not is_retryable(websocket.WebSocketBadStatusException("x %s %s", 403))
    assert is_retryable(websocket.WebSocketBadStatusException("x %s %s", 503))
