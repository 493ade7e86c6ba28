"""Faults against the whole system: a real broker, the local exchange, the
connector as its own process. Every trade the exchange generated must be in
Kafka, in the dead-letter topic, or counted in
``bybit_connector_dropped_records_total``; where the cause is on our side
(our crash, our shutdown, exchange drops, a broker that came back), nothing
may be lost or written twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_rig import (
    SYMBOLS,
    ConnectorProcess,
    Outcome,
    broker_outage,
    sent_trade_ids,
    wait_for,
)

from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer

pytestmark = pytest.mark.integration


KP, CK = "kafka-python", "confluent-kafka"  # kafka.client backends


def client_config(client: str) -> str:
    return f"  client: {client}\n"


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0, rate=5, record_frames=2_000_000, idle_timeout=None) as server:
        yield server


def check(outcome: Outcome, rows: list[Outcome], ours: bool) -> None:
    rows.append(outcome)
    o = outcome
    assert o.generated > 0 and o.landed > 0
    assert o.generated == o.landed + o.dead_lettered + o.counted, o
    assert o.lost == o.counted, o  # what is not in Kafka is exactly what was counted
    assert o.duplicated == 0, o
    if ours:
        assert o.lost == 0 and o.counted == 0, o


def finish(conn: ConnectorProcess, exchange: ExchangeServer) -> None:
    """Stop the feeds, let the connector read everything already sent, SIGTERM."""
    exchange.pause_feeds()
    seen = [-1.0]

    def caught_up() -> bool:
        now = conn.metric("bybit_connector_frames_received_total")
        done = now == seen[0]
        seen[0] = now
        time.sleep(1.0)
        return done

    wait_for(caught_up, 120, "the connector kept reading")
    assert conn.sigterm() == 0


def test_connector_kill9_and_restart(fault_broker: KafkaBroker, exchange: ExchangeServer,
                                     tmp_path: Path, record_outcome: list[Outcome]) -> None:
    conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, "f.crash", tmp_path)
    conn.start()
    time.sleep(5)
    conn.kill9()
    started = time.monotonic()
    conn.start()
    recovery = time.monotonic() - started
    time.sleep(5)
    finish(conn, exchange)
    check(conn.outcome(f"connector kill -9 + restart [{KP}]", exchange,
                       fault_broker.bootstrap_servers, recovery), record_outcome, ours=True)


def test_sigterm_mid_stream_and_restart(fault_broker: KafkaBroker, exchange: ExchangeServer,
                                        tmp_path: Path, record_outcome: list[Outcome]) -> None:
    conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, "f.term", tmp_path)
    conn.start()
    time.sleep(5)
    started = time.monotonic()
    assert conn.sigterm() == 0  # feeds still running
    assert time.monotonic() - started < 15
    conn.start()
    recovery = time.monotonic() - started
    time.sleep(3)
    finish(conn, exchange)
    check(conn.outcome(f"SIGTERM mid-stream + restart [{KP}]", exchange,
                       fault_broker.bootstrap_servers, recovery), record_outcome, ours=True)


def test_ten_exchange_drops_in_a_row(fault_broker: KafkaBroker, exchange: ExchangeServer,
                                     tmp_path: Path, record_outcome: list[Outcome]) -> None:
    conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, "f.drops", tmp_path)
    conn.start()
    time.sleep(2)
    worst = 0.0
    for i in range(10):
        connects = conn.metric("bybit_connector_connects_total")
        exchange.drop("v1")
        worst = max(worst, wait_for(
            lambda c=connects: conn.metric("bybit_connector_connects_total") > c
            and conn.metric("bybit_connector_subscriptions_active") >= len(SYMBOLS),
            30, f"no resubscribe after drop {i + 1}"))
        time.sleep(0.3)
    time.sleep(2)
    finish(conn, exchange)
    check(conn.outcome(f"exchange drops x10 [{KP}]", exchange, fault_broker.bootstrap_servers,
                       worst), record_outcome, ours=True)


@pytest.mark.parametrize("client", [KP, CK])
def test_buffer_full_backpressure_is_counted(fault_broker: KafkaBroker, tmp_path: Path,
                                            record_outcome: list[Outcome], client: str) -> None:
    with ExchangeServer(port=0, rate=20, record_frames=2_000_000, idle_timeout=None,
                        trades_per_frame=20) as exchange:
        conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, f"f.full.{client}",
                                tmp_path, kafka_extra="  max_pending_records: 5\n"
                                                      "  block_timeout_seconds: 0.001\n"
                                                      + client_config(client))
        conn.start()
        time.sleep(5)
        finish(conn, exchange)
        outcome = conn.outcome(f"buffer full (max_pending_records 5) [{client}]", exchange,
                               fault_broker.bootstrap_servers)
        check(outcome, record_outcome, ours=False)
        assert outcome.counted > 0, "the tiny buffer never filled: the test proves nothing"


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("down", "client"), [(30, KP), (120, KP), (300, KP), (30, CK), (120, CK)],
                         ids=lambda v: f"{v}s" if isinstance(v, int) else str(v))
def test_broker_kill9_outage(fault_broker: KafkaBroker, exchange: ExchangeServer,
                             tmp_path: Path, record_outcome: list[Outcome], down: int,
                             client: str) -> None:
    conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, f"f.outage{down}.{client}",
                            tmp_path, kafka_extra=client_config(client))
    conn.start()
    time.sleep(5)
    recovery = broker_outage(fault_broker, conn, down)
    status, body = conn.ready()
    before = sent_trade_ids(exchange)
    time.sleep(10)
    after = sent_trade_ids(exchange) - before
    wait_for(lambda: conn.ready()[0] == 200, 60, "not ready again after the outage")
    finish(conn, exchange)
    outcome = conn.outcome(f"broker kill -9 for {down} s [{client}]", exchange,
                           fault_broker.bootstrap_servers, recovery)
    check(outcome, record_outcome, ours=False)
    landed = conn.landed_ids
    sink_lines = [line for line in conn.stderr.read_text(errors="replace").splitlines()
                  if "connector.sink" in line]
    assert len(sink_lines) < 10 + down, "refused records are logged one by one"
    assert after and after <= landed, "a trade sent after the broker came back did not land"
    assert recovery < 60, (status, body)
