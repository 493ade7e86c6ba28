"""The local exchange's market keeps moving while a client is away, and says
what was sent meanwhile, so a reconnect gap is visible to tests.

Spoken to with a plain WebSocket client (not the connector), so the check
does not depend on the connector's own decoding."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from websocket import create_connection

from connector.exchange import ExchangeServer

pytestmark = pytest.mark.integration


def trades_for(exchange: ExchangeServer, seconds: float) -> list[dict[str, Any]]:
    ws = create_connection(f"{exchange.url}/spot/quote/ws/v1", timeout=5)
    try:
        ws.send(json.dumps({"symbol": "BTCUSDT", "topic": "trade", "event": "sub",
                            "params": {"binary": False}}))
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("topic") == "trade" and "data" in msg:
                got.extend(msg["data"])
        return got
    finally:
        ws.close()


def test_trades_continue_while_nobody_listens_and_the_tape_shows_the_gap() -> None:
    with ExchangeServer(port=0, rate=100) as exchange:
        before = trades_for(exchange, 1.0)
        time.sleep(2.0)  # ~200 trades made with nobody subscribed: more than the replay
        after = trades_for(exchange, 1.0)
        tape = exchange.trade_tape("BTCUSDT")
        with urllib.request.urlopen(f"http://127.0.0.1:{exchange.port}/control/trades"
                                    "?symbol=BTCUSDT", timeout=10) as response:
            over_http = json.loads(response.read())["result"]
    ids = [t["v"] for t in tape]
    assert len(ids) == len(set(ids)) and [int(i) for i in ids] == sorted(int(i) for i in ids)
    seen = {t["v"] for t in [*before, *after]}
    assert seen <= set(ids)
    missed = [i for i in ids[ids.index(before[-1]["v"]):ids.index(after[-1]["v"])]
              if i not in seen]
    assert len(missed) > 50, "the replay of 60 should not cover two seconds of trading"
    assert [t["v"] for t in over_http][:len(ids)] == ids
