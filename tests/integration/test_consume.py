"""``bybit-kafka-connector consume`` reads back what the connector wrote, in
both formats and from the dead-letter topic, against a real broker (and a
real registry for Confluent framing); run as the user runs it, a process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from connector.dev.kafka_broker import KafkaBroker
from connector.dev.schema_registry import SchemaRegistry
from connector.exchange import ExchangeServer

pytestmark = pytest.mark.integration


def config_text(exchange: ExchangeServer, bootstrap: str, prefix: str, serialization: str) -> str:
    return f"""
bybit:
  urls: {{v1: {exchange.url}/spot/quote/ws/v1, v2: {exchange.url}/spot/quote/ws/v2}}
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
{serialization}
metrics: {{enabled: false, port: 0}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [BTCUSDT]}}
  - {{stream: v2, topic: kline, interval: 1m, symbols: [ETHUSDT]}}
"""


def stream_some(exchange: ExchangeServer, path: Path, garbage: bool) -> None:
    """Run the connector (a process, as users do) for a few seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "connector", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while exchange.client_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        if garbage:
            exchange.send_garbage("text", "v1")
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def consume(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "connector", "consume", "--from-beginning",
                          "--timeout", "5", *args], capture_output=True, text=True,
                         timeout=120, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def check_records(lines: list[dict[str, Any]], bybit_topic: str) -> None:
    assert lines
    for line in lines:
        assert "error" not in line, line
        value = line["value"]
        assert value["bybit_topic"] == bybit_topic == line["headers"]["bybit.topic"]
        assert isinstance(value["receive_time"], int)  # epoch ms, as Bybit's own times


def test_plain_avro_records_and_dead_letters(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    prefix = f"consume{time.monotonic_ns()}"
    bootstrap = kafka_broker.bootstrap_servers
    path = tmp_path / "config.yaml"
    with ExchangeServer(port=0, rate=20) as exchange:
        path.write_text(config_text(exchange, bootstrap, prefix, ""))
        stream_some(exchange, path, garbage=True)
    trades = consume("--topic", f"{prefix}.v1.trade", "--bootstrap-servers", bootstrap,
                     "--max-messages", "70")
    assert len(trades) == 70  # the replay of 60 and more
    check_records(trades, "trade")
    assert len({t["value"]["trade_id"] for t in trades}) == 70
    assert all(t["key"] == "BTCUSDT" for t in trades)
    klines = consume("--topic", f"{prefix}.v2.kline_1m", "--config", str(path))
    check_records(klines, "kline_1m")
    dead = consume("--topic", f"{prefix}.dead-letter", "--bootstrap-servers", bootstrap)
    assert len(dead) == 1 and dead[0]["dead_letter"] is True
    assert dead[0]["raw"] == "{not json"
    assert dead[0]["headers"]["dlq.reason"] == "undecodable_frame"


def test_confluent_records_via_the_registry(kafka_broker: KafkaBroker,
                                            schema_registry: SchemaRegistry,
                                            tmp_path: Path) -> None:
    prefix = f"consumecf{time.monotonic_ns()}"
    path = tmp_path / "config.yaml"
    serialization = ("serialization:\n  format: confluent\n"
                     f"  schema_registry: {{url: \"{schema_registry.url}\"}}")
    with ExchangeServer(port=0, rate=20) as exchange:
        path.write_text(config_text(exchange, kafka_broker.bootstrap_servers, prefix,
                                    serialization))
        stream_some(exchange, path, garbage=False)
    trades = consume("--topic", f"{prefix}.v1.trade", "--config", str(path))
    check_records(trades, "trade")
    assert all("avro.schema.fingerprint" not in t["headers"] for t in trades)
    klines = consume("--topic", f"{prefix}.v2.kline_1m", "--config", str(path))
    check_records(klines, "kline_1m")


def test_missing_topic_is_a_clear_error(kafka_broker: KafkaBroker) -> None:
    out = subprocess.run([sys.executable, "-m", "connector", "consume", "--topic", "no.such",
                          "--bootstrap-servers", kafka_broker.bootstrap_servers],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "topic 'no.such' does not exist" in out.stderr
