"""End to end against a real Kafka broker and the local exchange: every topic
lands in its Kafka topic exactly as the exchange sent it, nothing is lost or
written twice across reconnects, broker restarts and SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connector.config.load import loads
from connector.config.model import Config
from connector.dev.consume import AvroDecoder, Message, read_all
from connector.dev.kafka_broker import KafkaBroker, free_port
from connector.exchange import ExchangeServer
from connector.records import load_schema
from connector.service import Connector

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

ALL_TOPICS = """
  - {stream: v1, topic: trade, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v1, topic: realtimes, symbols: [BTCUSDT]}
  - {stream: v1, topic: kline_1m, symbols: [BTCUSDT]}
  - {stream: v1, topic: kline, interval: 1h, symbols: [ETHUSDT]}
  - {stream: v1, topic: depth, symbols: [BTCUSDT]}
  - {stream: v1, topic: mergedDepth, dump_scale: 1, symbols: [ETHUSDT]}
  - {stream: v1, topic: diffDepth, symbols: [BTCUSDT], binary: true}
  - {stream: v1, topic: lt, symbols: [BTC3LUSDTNAV]}
  - {stream: v2, topic: depth, symbols: [ETHUSDT]}
  - {stream: v2, topic: kline, interval: 5m, symbols: [BTCUSDT]}
  - {stream: v2, topic: trade, symbols: [BTCUSDT]}
  - {stream: v2, topic: bookTicker, symbols: [BTCUSDT, ETHUSDT]}
  - {stream: v2, topic: realtimes, symbols: [ETHUSDT]}
  - {stream: private, topic: outboundAccountInfo}
  - {stream: private, topic: executionReport}
  - {stream: private, topic: ticketInfo}
  - {stream: private, topic: stop_executionReport}
"""


def make_config(exchange: ExchangeServer, bootstrap: str, subscriptions: str, prefix: str,
                extra: str = "", client: str = "kafka-python") -> Config:
    """``client`` other than the default also gets its own topics (``<prefix>.<client>``):
    tests of both clients share one broker."""
    if client != "kafka-python":
        prefix = f"{prefix}.{client}"
    text = f"""
bybit:
  urls:
    v1: {exchange.url}/spot/quote/ws/v1
    v2: {exchange.url}/spot/quote/ws/v2
    private: {exchange.url}/spot/ws
  credentials: {{api_key: demo-key, api_secret: demo-secret}}
  ping_interval_seconds: 1
kafka:
  bootstrap_servers: ["{bootstrap}"]
  client: {client}
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
{extra}
metrics: {{enabled: false}}
subscriptions:
{subscriptions}
"""
    return loads(text, env={})


def kinds(config: Config) -> dict[str, str]:
    return {config.kafka_topic(s): s.spec.kind for s in config.subscriptions}


def to_ms(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value


def as_bybit(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """Invert the mapping: the Bybit item a decoded record stands for."""
    item: dict[str, Any] = {}
    for field in load_schema(kind)["fields"]:
        key = field.get("bybit")
        if key is None or record[field["name"]] is None:
            continue
        value = to_ms(record[field["name"]])
        if field["name"] in ("bids", "asks"):
            value = [[lv["price"], lv["quantity"]] for lv in value]
        elif field["name"] == "balances":
            value = [{"a": b["asset"], "f": b["free"], "l": b["locked"]} for b in value]
        item[key] = value
    for key, text in (record.get("extra") or {}).items():
        item[key] = json.loads(text)
    return item


def normalise(item: dict[str, Any], drop: tuple[str, ...] = ("s", "symbol")) -> dict[str, Any]:
    """Bybit's own item with the quirks the schema types resolve (numeric-string
    times become ints; "True" becomes true); the envelope symbol is kept apart."""
    out = {}
    for key, value in item.items():
        if key in drop:
            continue
        if key in ("t", "E", "O", "T", "C", "time") and isinstance(value, str) and \
                value.isdigit() and not (key in ("t", "T") and len(value) > 13):
            value = int(value)
        out[key] = value
    return out


def sent_items(exchange: ExchangeServer) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """What the exchange sent, as (stream, topic id, symbol) → items in order."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for stream, text in list(exchange.sent):
        frame = json.loads(text)
        if stream == "private":
            for event in frame if isinstance(frame, list) else [frame]:
                out[(stream, event["e"], "")].append(event)
            continue
        params = frame["params"]
        topic = frame["topic"]
        if topic == "kline":
            topic = f"kline_{params['klineType']}"
        elif topic == "mergedDepth":
            topic = f"mergedDepth_{params['dumpScale']}"
        if stream == "v1":
            out[(stream, topic, frame["symbol"])].extend(frame["data"])
        else:
            out[(stream, topic, params["symbol"])].append(frame["data"])
    return out


def unique_trades(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for item in items:
        if item["v"] not in seen:
            seen.add(item["v"])
            out.append(item)
    return out


@pytest.fixture(params=["kafka-python", "confluent-kafka"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """The Kafka client backend (``kafka.client``) of the tests that take it."""
    return str(request.param)


def topic_of(config: Config, stream: str, topic: str) -> str:
    return config.kafka.topic_template.format(stream=stream, topic=topic)


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0, rate=25, record_frames=1_000_000,
                        private_interval=0.05) as server:
        yield server


def run_and_collect(exchange: ExchangeServer, config: Config, bootstrap: str,
                    seconds: float, during: Any = None) -> tuple[dict[str, list[Message]],
                                                                 Connector]:
    connector = Connector(config).start()
    try:
        time.sleep(seconds)
        if during is not None:
            during(connector)
        exchange.pause_feeds()
        time.sleep(0.5)  # let in-flight frames arrive
    finally:
        connector.stop()
    topics = [*kinds(config), config.kafka.dead_letter_topic]
    return read_all(bootstrap, topics, timeout=30), connector


def test_every_topic_lands_exactly_as_sent(kafka_broker: KafkaBroker, exchange: ExchangeServer,
                                           kafka_client: str) -> None:
    config = make_config(exchange, kafka_broker.bootstrap_servers, ALL_TOPICS, "e2e.all",
                         client=kafka_client)
    messages, connector = run_and_collect(exchange, config, kafka_broker.bootstrap_servers, 3)
    assert connector.sink is not None
    decoder = AvroDecoder()
    sent = sent_items(exchange)
    by_kind = kinds(config)
    for sub in config.subscriptions:
        topic = config.kafka_topic(sub)
        kind = by_kind[topic]
        got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in messages[topic]:
            record = decoder.decode(kind, m)
            assert record["stream"] == sub.stream
            key = "" if sub.stream == "private" else record["symbol"]
            if sub.stream != "private":
                assert m.key == record["symbol"].encode()
            assert m.headers["bybit.topic"] == sub.topic_id.encode()
            got[key].append(record)
        symbols = sub.symbols or [""]
        for symbol in symbols:
            expected = sent[(sub.stream, sub.topic_id if sub.stream != "private" else sub.topic,
                             symbol)]
            if sub.topic == "trade":
                expected = unique_trades(expected)
            assert expected, f"the exchange sent nothing for {sub.topic_id} {symbol}"
            records = got[symbol]
            assert len(records) == len(expected), (topic, symbol)
            for record, item in zip(records, expected, strict=True):
                drop = ("s", "symbol") if sub.stream != "private" else ()
                assert normalise(as_bybit(kind, record), drop) == normalise(item, drop), topic
            if sub.topic == "diffDepth":
                assert [r["is_snapshot"] for r in records[:2]] == [True, False]
    assert messages[config.kafka.dead_letter_topic] == []
    assert connector.sink is not None and connector.sink.pending == 0


def test_reconnect_writes_no_duplicate_trades(kafka_broker: KafkaBroker,
                                              exchange: ExchangeServer) -> None:
    subs = "  - {stream: v1, topic: trade, symbols: [BTCUSDT, ETHUSDT]}\n"
    config = make_config(exchange, kafka_broker.bootstrap_servers, subs, "e2e.reconnect")

    def drop_twice(connector: Connector) -> None:
        for _ in range(2):
            exchange.drop("v1")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.1)
                if all(c.all_subscribed for c in connector.connections):
                    break
            time.sleep(0.5)

    messages, _ = run_and_collect(exchange, config, kafka_broker.bootstrap_servers, 1,
                                  during=drop_twice)
    records = messages["e2e.reconnect.v1.trade"]
    decoder = AvroDecoder()
    ids = [decoder.decode("v1_trade", m)["trade_id"] for m in records]
    assert len(ids) == len(set(ids)), "a replayed trade was written twice"
    sent_ids = {item["v"] for (_, _, _), items in sent_items(exchange).items() for item in items}
    assert set(ids) == sent_ids
    firsts = sum(1 for _, text in exchange.sent if '"f":true' in text)
    assert firsts == 6  # 2 symbols x (first subscribe + 2 resubscribes), each a 60-trade replay


def test_undecodable_frames_go_to_the_dead_letter_topic(kafka_broker: KafkaBroker,
                                                        exchange: ExchangeServer,
                                                        kafka_client: str) -> None:
    subs = "  - {stream: v2, topic: bookTicker, symbols: [BTCUSDT]}\n"
    config = make_config(exchange, kafka_broker.bootstrap_servers, subs, "e2e.dlq",
                         client=kafka_client)

    def garbage(connector: Connector) -> None:
        exchange.send_garbage("text", "v2")
        exchange.send_garbage("unknown", "v2")
        time.sleep(0.5)
        assert all(c.is_up for c in connector.connections)

    messages, _ = run_and_collect(exchange, config, kafka_broker.bootstrap_servers, 1,
                                  during=garbage)
    dead = messages[config.kafka.dead_letter_topic]
    assert [m.value for m in dead] == [b"{not json", b'{"hello":"world","n":[1,2]}']
    assert dead[0].headers["dlq.reason"] == b"undecodable_frame"
    assert dead[0].headers["dlq.undecodable_reason"] == b"invalid_json"
    assert dead[1].headers["dlq.undecodable_reason"] == b"unknown_shape"
    assert dead[0].headers["dlq.source"] == b"stream:v2"
    assert messages[topic_of(config, "v2", "bookTicker")]


def test_broker_restart_loses_nothing_within_the_buffer(exchange: ExchangeServer,
                                                        kafka_client: str) -> None:
    subs = ("  - {stream: v1, topic: trade, symbols: [BTCUSDT]}\n"
            "  - {stream: v2, topic: bookTicker, symbols: [ETHUSDT]}\n")
    from prometheus_client import REGISTRY

    reasons = ("buffer_full", "shutdown_timeout", "dead_letter_failed")

    def dropped() -> list[float]:
        # The registry is process-wide: earlier tests may have dropped records on purpose.
        return [REGISTRY.get_sample_value("bybit_connector_dropped_records_total",
                                          {"reason": reason}) or 0.0 for reason in reasons]

    with KafkaBroker() as broker:
        config = make_config(exchange, broker.bootstrap_servers, subs, "e2e.restart",
                             extra="  max_pending_records: 100000\n", client=kafka_client)
        before = dropped()
        messages, _ = run_and_collect(
            exchange, config, broker.bootstrap_servers, 1,
            during=lambda c: (broker.restart(down_seconds=2), time.sleep(2)))
        assert dropped() == before, dict(zip(reasons, dropped(), strict=True))
        sent = sent_items(exchange)
        decoder = AvroDecoder()
        trades = [decoder.decode("v1_trade", m)["trade_id"]
                  for m in messages[topic_of(config, "v1", "trade")]]
        expected = [t["v"] for t in unique_trades(sent[("v1", "trade", "BTCUSDT")])]
        assert sorted(trades) == sorted(expected)
        assert len(messages[topic_of(config, "v2", "bookTicker")]) == len(
            sent[("v2", "bookTicker", "ETHUSDT")])


def test_sigterm_under_load_flushes_everything(kafka_broker: KafkaBroker, tmp_path: Path,
                                               kafka_client: str) -> None:
    with ExchangeServer(port=0, rate=200) as exchange:
        subs = ("  - {stream: v1, topic: trade, symbols: [BTCUSDT, ETHUSDT, SOLUSDT]}\n"
                "  - {stream: v2, topic: bookTicker, symbols: [BTCUSDT, ETHUSDT]}\n"
                "  - {stream: v1, topic: depth, symbols: [BTCUSDT]}\n")
        config = make_config(exchange, kafka_broker.bootstrap_servers, subs, "e2e.sigterm",
                             client=kafka_client)
        path, port = tmp_path / "config.yaml", free_port()
        path.write_text(f"""
bybit:
  urls:
    v1: {exchange.url}/spot/quote/ws/v1
    v2: {exchange.url}/spot/quote/ws/v2
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
  client: {kafka_client}
  topic_template: "{config.kafka.topic_template}"
  dead_letter_topic: {config.kafka.dead_letter_topic}
metrics: {{host: 127.0.0.1, port: {port}}}
subscriptions:
{subs}""")
        proc = subprocess.Popen([sys.executable, "-m", "connector", "run", "--config", str(path)],
                                stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def produced() -> float:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return 0.0
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("bybit_connector_records_produced_total{"))

        # Under load, not for a fixed time: a busy machine streams fewer records in 4 s.
        assert _wait(lambda: produced() > 1500, 60), "fewer than 1500 records in 60 s"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        summary = re.search(r"records accepted=(\d+) lost=(\d+)", err)
        assert summary, err[-3000:]
        accepted, lost = int(summary.group(1)), int(summary.group(2))
        assert lost == 0 and accepted > 1000
        messages = read_all(kafka_broker.bootstrap_servers,
                            [*kinds(config), config.kafka.dead_letter_topic], timeout=30)
        assert sum(len(m) for m in messages.values()) == accepted
        assert "demo-secret" not in err


def test_backpressure_drops_are_counted_exactly(exchange: ExchangeServer,
                                                kafka_client: str) -> None:
    """Broker down: the buffer fills to its bound, then every further record is
    dropped and counted; after recovery Kafka has exactly the accepted ones."""
    from connector.config.model import KafkaConfig
    from connector.sink.kafka_sink import KafkaSink

    with KafkaBroker() as broker:
        sink = KafkaSink(KafkaConfig(bootstrap_servers=[broker.bootstrap_servers],
                                     client=kafka_client,  # type: ignore[arg-type]
                                     max_pending_records=50, block_timeout_seconds=0.2,
                                     dead_letter_topic="bp.dead-letter"))
        assert sink.send("bp.data", b"k", b"warm-up", [], time.monotonic_ns())
        assert sink.flush(30) == 0
        broker.kill()
        results = Counter(sink.send("bp.data", b"k", f"v{i}".encode(), [], time.monotonic_ns())
                          for i in range(300))
        assert results[True] == 50 and results[False] == 250
        broker.restart()
        assert sink.close(60) == 0
        got = read_all(broker.bootstrap_servers, ["bp.data"])["bp.data"]
        assert len(got) == 51
        assert [m.value for m in got[1:]] == [f"v{i}".encode() for i in range(50)]


def test_metrics_move_during_a_run(kafka_broker: KafkaBroker, exchange: ExchangeServer,
                                   tmp_path: Path) -> None:
    """Scrape /metrics while running: a forced disconnect flips the state and
    counts a reconnect; a garbage frame counts as undecodable."""
    subs = "  - {stream: v1, topic: trade, symbols: [BTCUSDT]}\n"
    config = make_config(exchange, kafka_broker.bootstrap_servers, subs, "e2e.metrics")
    config = loads(json.dumps({**_as_dict(config), "metrics": {"port": 0}}), env={})
    connector = Connector(config).start()
    assert connector.health is not None
    port = connector.health.port

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    try:
        _wait(lambda: all(c.all_subscribed for c in connector.connections))
        name = connector.connections[0].name
        up = f'bybit_connector_connection_up{{connection="{name}",stream="v1"}}'
        connects = f'bybit_connector_connects_total{{connection="{name}",stream="v1"}}'
        bad = 'bybit_connector_undecodable_frames_total{reason="invalid_json",stream="v1"}'
        before = scrape()
        assert before[up] == 1
        _wait(lambda: _ready(port))
        exchange.send_garbage("text", "v1")
        exchange.drop("v1")
        _wait(lambda: scrape()[connects] == before[connects] + 1)
        after = scrape()
        assert after[bad] == before.get(bad, 0) + 1 or _wait(
            lambda: scrape()[bad] == before.get(bad, 0) + 1)
        assert after[up] == 1
        produced = 'bybit_connector_records_produced_total{kafka_topic="e2e.metrics.v1.trade"}'
        assert after[produced] > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert json.loads(r.read())["alive"] is True
    finally:
        connector.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return bool(json.loads(r.read())["ready"])
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        body = json.loads(exc.read())
        assert body["ready"] is False and "connections" in body
        return False


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _as_dict(config: Config) -> dict[str, Any]:
    """Enough of a Config to re-load it with changes (tests only)."""
    subs = [{k: v for k, v in {"stream": s.stream, "topic": s.topic, "symbols": s.symbols,
                               "interval": s.interval, "dump_scale": s.dump_scale}.items()
             if v not in (None, [])} for s in config.subscriptions]
    return {"bybit": {"urls": {k: v for k, v in vars(config.bybit.urls).items() if v}},
            "kafka": {"bootstrap_servers": config.kafka.bootstrap_servers,
                      "topic_template": config.kafka.topic_template,
                      "dead_letter_topic": config.kafka.dead_letter_topic},
            "subscriptions": subs}
