"""v5 subscriptions in the config: validation with YAML paths, topic ids,
Kafka topics, URLs, the connection plan and `validate` output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.config.load import loads
from connector.errors import ConfigError
from connector.service import plan_groups, subscriptions_by_stream

ROOT = Path(__file__).resolve().parents[2]
BASE = 'kafka:\n  bootstrap_servers: ["127.0.0.1:9092"]\n'


def cfg(extra: str) -> str:
    return BASE + textwrap.dedent(extra)


GOOD = cfg("""
bybit:
  urls: {v5: "ws://127.0.0.1:1/v5/public/spot", v5-private: "ws://127.0.0.1:1/v5/private"}
  credentials: {api_key: k, api_secret: s}
subscriptions:
  - {stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT]}
  - {stream: v5, topic: kline, interval: 1, symbols: [BTCUSDT]}
  - {stream: v5, topic: kline, interval: D, symbols: [BTCUSDT]}
  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v5, topic: tickers, symbols: [BTCUSDT]}
  - {stream: v5, topic: priceLimit, symbols: [BTCUSDT]}
  - {stream: v5, topic: orderbook.rpi, symbols: [BTCUSDT]}
  - {stream: v5-private, topic: order.spot}
  - {stream: v5-private, topic: execution}
  - {stream: v5-private, topic: execution.fast.spot}
  - {stream: v5-private, topic: wallet}
""")


def test_v5_topic_ids_and_kafka_topics() -> None:
    config = loads(GOOD)
    got = [(s.stream, s.topic_id, config.kafka_topic(s), s.spec.kind)
           for s in config.subscriptions]
    assert got == [
        ("v5", "orderbook.50", "bybit.spot.v5.orderbook.50", "v5_orderbook"),
        ("v5", "kline.1", "bybit.spot.v5.kline.1", "v5_kline"),
        ("v5", "kline.D", "bybit.spot.v5.kline.D", "v5_kline"),
        ("v5", "publicTrade", "bybit.spot.v5.publicTrade", "v5_public_trade"),
        ("v5", "tickers", "bybit.spot.v5.tickers", "v5_tickers"),
        ("v5", "priceLimit", "bybit.spot.v5.priceLimit", "v5_price_limit"),
        ("v5", "orderbook.rpi", "bybit.spot.v5.orderbook.rpi", "v5_orderbook_rpi"),
        ("v5-private", "order.spot", "bybit.spot.v5-private.order.spot", "v5_order"),
        ("v5-private", "execution", "bybit.spot.v5-private.execution", "v5_execution"),
        ("v5-private", "execution.fast.spot", "bybit.spot.v5-private.execution.fast.spot",
         "v5_execution_fast"),
        ("v5-private", "wallet", "bybit.spot.v5-private.wallet", "v5_wallet"),
    ]
    assert config.subscriptions[1].interval == "1"  # YAML int normalised
    assert config.bybit.urls.for_stream("v5-private") == "ws://127.0.0.1:1/v5/private"
    assert config.bybit.urls.for_stream("v5") == "ws://127.0.0.1:1/v5/public/spot"


@pytest.mark.parametrize(("extra", "message"), [
    ("- {stream: v5, topic: orderbook, depth: 25, symbols: [BTCUSDT]}",
     "subscriptions[0].depth: 25 is not one of 1, 50, 200, 1000"),
    ("- {stream: v5, topic: orderbook, symbols: [BTCUSDT]}",
     "subscriptions[0].depth: is required for orderbook: one of 1, 50, 200, 1000"),
    ("- {stream: v5, topic: kline, interval: 2, symbols: [BTCUSDT]}",
     "subscriptions[0].interval: 2 is not one of 1, 3, 5, 15, 30, 60, 120, 240, 360, 720, "
     "D, W, M"),
    ("- {stream: v5, topic: kline, interval: 1m, symbols: [BTCUSDT]}",
     "subscriptions[0].interval: '1m' is not one of 1, 3, 5, 15, 30, 60, 120, 240, 360, "
     "720, D, W, M (v5 names it '1')"),
    ("- {stream: v5, topic: kline, symbols: [BTCUSDT]}",
     "subscriptions[0].interval: is required for kline"),
    ("- {stream: v5, topic: trade, symbols: [BTCUSDT]}",
     "subscriptions[0].topic: 'trade' is not a v5 topic ('trade' exists on stream v1)"),
    ("- {stream: v5, topic: orderbook.full, symbols: [BTCUSDT]}",
     "subscriptions[0].topic: 'orderbook.full' is not a v5 topic (one of orderbook, "
     "orderbook.rpi, publicTrade, tickers, kline, priceLimit)"),
    ("- {stream: v5-private, topic: dcp.spot}",
     "subscriptions[0].topic: 'dcp.spot' is not a v5-private topic (one of order, "
     "order.spot, execution, execution.spot, execution.fast, execution.fast.spot, wallet)"),
    ("- {stream: v5, topic: publicTrade, depth: 50, symbols: [BTCUSDT]}",
     "subscriptions[0].depth: only orderbook takes a depth, not publicTrade"),
    ("- {stream: v5, topic: tickers, interval: '1', symbols: [BTCUSDT]}",
     "subscriptions[0].interval: only kline takes an interval, not tickers"),
    ("- {stream: v5, topic: publicTrade, symbols: [btcusdt]}",
     "subscriptions[0].symbols[0]: 'btcusdt' is not a Bybit symbol"),
    ("- {stream: v5, topic: publicTrade, binary: true, symbols: [BTCUSDT]}",
     "subscriptions[0].binary: v5 streams have no binary mode"),
    ("- {stream: v5-private, topic: wallet, symbols: [BTCUSDT]}",
     "subscriptions[0].symbols: private topics take no symbols"),
    ("- {stream: v1, topic: trade, depth: 50, symbols: [BTCUSDT]}",
     "subscriptions[0].depth: only v5 orderbook takes a depth"),
    ("- {stream: v5-private, topic: wallet}",
     "bybit.credentials.api_key: is required because a private topic is subscribed"),
    ("- {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}\n"
     "- {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}",
     "subscriptions[1].symbols[0]: duplicate subscription: v5 publicTrade BTCUSDT"),
])
def test_bad_v5_subscriptions(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(BASE + "subscriptions:\n" + textwrap.indent(extra, "  ") + "\n")
    assert message in str(err.value)


def test_bad_url_key_names_the_path() -> None:
    with pytest.raises(ConfigError) as err:
        loads(cfg("""
bybit:
  urls: {v5_private: "ws://x"}
subscriptions:
  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}
"""))
    assert "bybit.urls.v5_private: unknown key" in str(err.value)


def test_connection_plan() -> None:
    config = loads(GOOD)
    by_stream = subscriptions_by_stream(config)
    assert [len(plan_groups(s, subs, 200)) for s, subs in by_stream.items()] == [1, 1]
    assert [len(plan_groups(s, subs, 3)) for s, subs in by_stream.items()] == [3, 1]


def test_validate_prints_the_shipped_v5_plan() -> None:
    out = subprocess.run([sys.executable, "-m", "connector", "validate", "--config",
                          str(ROOT / "config.yaml")], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert "v5" in out and "bybit.spot.v5.orderbook.50" in out
    assert "bybit.spot.v1" not in out  # legacy is only commented out


def test_validate_exits_2_on_a_bad_v5_interval(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(cfg("subscriptions:\n  - {stream: v5, topic: kline, interval: 2m, "
                        "symbols: [BTCUSDT]}\n"))
    run = subprocess.run([sys.executable, "-m", "connector", "validate", "--config",
                          str(path)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2 and "subscriptions[0].interval" in run.stderr


def test_build_connections_for_v5() -> None:
    from connector.service import build_connections
    config = loads(cfg("""
bybit:
  credentials: {api_key: k, api_secret: s}
  max_subscriptions_per_connection: 2
subscriptions:
  - {stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT, ETHUSDT, SOLUSDT]}
  - {stream: v5-private, topic: order.spot}
  - {stream: v5-private, topic: wallet}
"""))
    seen: list[tuple] = []
    conns = build_connections(config, lambda e: None, lambda s, p: seen.append((s, p)))
    got = [(c.name, c.settings.url, c.settings.api_key) for c in conns]
    assert got == [
        ("v5-0", "wss://stream.bybit.com/v5/public/spot", None),
        ("v5-1", "wss://stream.bybit.com/v5/public/spot", None),
        ("v5-private-0", "wss://stream.bybit.com/v5/private", "k"),
    ]
    assert conns[0].owns("orderbook.50", "ETHUSDT") and not conns[0].owns(
        "orderbook.50", "SOLUSDT")
    assert conns[1].owns("orderbook.50", "SOLUSDT")
    assert conns[2].owns("wallet", "") and conns[2].settings.api_secret == "s"
    assert "'s'" not in repr(conns[2].settings) and "api_secret" not in repr(conns[2].settings)


def test_testnet_v5_urls() -> None:
    from connector.service import build_connections
    config = loads(cfg("""
bybit: {network: testnet}
subscriptions:
  - {stream: v5, topic: tickers, symbols: [BTCUSDT]}
"""))
    (conn,) = build_connections(config, lambda e: None)
    assert conn.settings.url == "wss://stream-testnet.bybit.com/v5/public/spot"


def test_metric_children_exist_at_startup_and_resyncs_reach_the_owning_connection() -> None:
    from prometheus_client import REGISTRY

    from connector.service import Connector, _init_metrics, build_connections
    config = loads(cfg("""
bybit: {max_subscriptions_per_connection: 1}
subscriptions:
  - {stream: v5, topic: orderbook, depth: 200, symbols: [BTCUSDT, ETHUSDT]}
"""))
    _init_metrics(config)
    # The registry is process-wide (other tests may have counted already): the
    # children must exist, whatever their value.
    for reason in ("gap", "out_of_order"):
        assert REGISTRY.get_sample_value("bybit_connector_book_resyncs_total", {
            "stream": "v5", "topic": "orderbook.200", "reason": reason}) is not None
    for reason in ("stale", "before_snapshot"):
        assert REGISTRY.get_sample_value("bybit_connector_book_deltas_dropped_total", {
            "stream": "v5", "topic": "orderbook.200", "reason": reason}) is not None
    assert REGISTRY.get_sample_value("bybit_connector_subscription_failures_total", {
        "stream": "v5", "topic": "orderbook.200", "reason": "error_ack"}) is not None
    connector = Connector(config)
    connector.connections = build_connections(config, lambda e: None)
    connector._resubscribe("v5", "orderbook.200", "ETHUSDT")
    texts = [c._subs.take_resubscribes()[0] for c in connector.connections]
    assert [len(t) for t in texts] == [0, 1]
    assert json.loads(texts[1][0])["args"] == ["orderbook.200.ETHUSDT"]
