"""Bybit unreachable: the log and ``/readyz`` name the URL, and a connection that
never opened is reported as "cannot connect", not as "disconnected"."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from connector.config.load import loads
from connector.dev.kafka_broker import KafkaBroker, free_port
from connector.service import Connector

pytestmark = pytest.mark.integration


def test_unreachable_bybit_is_named_in_log_and_readiness(
        kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    url = f"ws://127.0.0.1:{free_port()}/v5/public/spot"  # nothing listens there
    prefix = f"unreachable.{uuid.uuid4().hex[:8]}"
    config = loads(f"""
bybit:
  urls: {{v5: "{url}"}}
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{enabled: false}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [BTCUSDT]}}
""", env={})
    caplog.set_level(logging.WARNING, logger="connector.bybit.connection")
    connector = Connector(config)
    try:
        connector.start()
        deadline = time.monotonic() + 30
        while not [r for r in caplog.records if "cannot connect" in r.getMessage()]:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        body = connector.readiness()
    finally:
        connector.stop()
    line = next(r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage())
    assert f"cannot connect to {url} (" in line, line
    assert not [r for r in caplog.records if "disconnected" in r.getMessage()], caplog.text
    assert body["ready"] is False
    [conn] = body["connections"]
    assert conn["url"] == url and conn["up"] is False and conn["last_error"], conn
