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
        time.sleep(0.5)
        return done

    wait_for(caught_up, 120, "the connector kept reading")
    assert conn.sigterm() == 0


def test_connector_kill9_and_restart(fault_broker: KafkaBroker, exchange: ExchangeServer,
                                     tmp_path: Path, record_outcome: list[Outcome]) -> None:
    conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, "f.crash", tmp_path)
    conn.start()
    time.sleep(2)
    conn.kill9()
    started = time.monotonic()
    conn.start()
    recovery = time.monotonic() - started
    time.sleep(2)
    finish(conn, exchange)
    check(conn.outcome(f"connector kill -9 + restart [{KP}]", exchange,
                       fault_broker.bootstrap_servers, recovery), record_outcome, ours=True)


def test_sigterm_mid_stream_and_restart(fault_broker: KafkaBroker, exchange: ExchangeServer,
                                        tmp_path: Path, record_outcome: list[Outcome]) -> None:
    conn = ConnectorProcess(exchange, fault_broker.bootstrap_servers, "f.term", tmp_path)
    conn.start()
    time.sleep(2)
    started = time.monotonic()
    assert conn.sigterm() == 0  # feeds still running
    assert time.monotonic() - started < 15
    conn.start()
    recovery = time.monotonic() - started
    time.sleep(2)
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
        time.sleep(3)
        finish(conn, exchange)
        outcome = conn.outcome(f"buffer full (max_pending_records 5) [{client}]", exchange,
                               fault_broker.bootstrap_servers)
        check(outcome, record_outcome, ours=False)
        assert outcome.counted > 0, "the tiny buffer never filled: the test proves nothing"


# One broker outage, longer than the old default delivery deadline (120 s, which
# dead-lettered about a ninth of the records of a 120 s outage), serves every row:
# three connectors stream through it side by side, on disjoint symbols (each one's
# trades told apart at the exchange): kafka-python and confluent-kafka with the
# default bound, and kafka-python with a bound the outage overflows.
#
# What matters is the outage measured against the client's timeouts, not in wall
# seconds. The fault config scales every timeout a long outage runs into down by
# SCALE (request timeout 30 s, librdkafka's socket timeout 60 s, reconnect backoff
# cap 5 s, metadata refresh 300 s), so the outage takes the same paths (requests
# timing out and retried, reconnects at the backoff cap, failed metadata refreshes)
# as one SCALE times longer with the defaults; the old deadline (4 request timeouts)
# scales with them to OLD_DEADLINE / SCALE. The outage lasts three of those: it
# stands for 360 s with the defaults. The delivery deadline itself is the default
# (none).
SCALE = 15
SCALED_TIMEOUTS = {
    KP: (f"  producer: {{request_timeout_ms: {30_000 // SCALE},"
         f" reconnect_backoff_max_ms: {5_000 // SCALE},"
         f" metadata_max_age_ms: {300_000 // SCALE}}}\n"),
    CK: (f'  producer: {{"request.timeout.ms": {30_000 // SCALE},'
         f' "socket.timeout.ms": {60_000 // SCALE},'
         f' "reconnect.backoff.max.ms": {5_000 // SCALE},'
         f' "topic.metadata.refresh.interval.ms": {300_000 // SCALE}}}\n'),
}
OLD_DEADLINE = 120  # seconds: the default delivery deadline before issue 20
OUTAGE = 3 * OLD_DEADLINE / SCALE  # seconds: longer than a metadata refresh interval too
OVERFLOW_BOUND = 100


@pytest.mark.timeout(600)
def test_broker_kill9_outage_beyond_the_old_deadline(
        fault_broker: KafkaBroker, exchange: ExchangeServer, tmp_path: Path,
        record_outcome: list[Outcome]) -> None:
    """Issue 20.1: with no delivery deadline, an outage longer than the old one ends
    with every trade in its own topic, in order per key, written once (nothing
    dead-lettered or counted), with either client; what overflows the pending bound
    is dropped and counted exactly, and what fit is delivered."""
    runs = [  # (connector, label, overflows)
        (ConnectorProcess(exchange, fault_broker.bootstrap_servers, f"f.outage.{KP}", tmp_path,
                          symbols=SYMBOLS[:4],
                          kafka_extra=client_config(KP) + SCALED_TIMEOUTS[KP]), f"[{KP}]", False),
        (ConnectorProcess(exchange, fault_broker.bootstrap_servers, f"f.outage.{CK}", tmp_path,
                          symbols=SYMBOLS[4:7],
                          kafka_extra=client_config(CK) + SCALED_TIMEOUTS[CK]), f"[{CK}]", False),
        (ConnectorProcess(exchange, fault_broker.bootstrap_servers, "f.outage.overflow",
                          tmp_path, symbols=SYMBOLS[7:],
                          kafka_extra=client_config(KP) + SCALED_TIMEOUTS[KP]
                          + f"  max_pending_records: {OVERFLOW_BOUND}\n"
                            "  block_timeout_seconds: 0.5\n"),
         f"max_pending_records {OVERFLOW_BOUND} [{KP}]", True),
    ]
    for conn, _, _ in runs:
        conn.start()
    wait_for(lambda: all(c.produced() > 0 for c, _, _ in runs), 30,
             "nothing delivered before the outage")
    down, recovery = broker_outage(fault_broker, runs[0][0], OUTAGE)
    before = sent_trade_ids(exchange)
    wait_for(lambda: len(sent_trade_ids(exchange) - before) >= 100, 30,
             "the exchange stopped trading")
    after = sent_trade_ids(exchange) - before
    for conn, _, _ in runs:
        wait_for(lambda c=conn: c.ready()[0] == 200, 60, "not ready again after the outage")
    for conn, _, _ in runs:
        finish(conn, exchange)
    outcomes = []
    for conn, label, overflows in runs:
        o = conn.outcome(f"broker kill -9 for {down:.0f} s (x{SCALE} = {down * SCALE:.0f} s) "
                         f"{label}", exchange, fault_broker.bootstrap_servers, recovery)
        record_outcome.append(o)
        outcomes.append((conn, o, overflows))
    assert down * SCALE > OLD_DEADLINE, (f"the outage ({down:.0f} s x{SCALE}) did not outlast "
                                         "the old deadline")
    for conn, o, overflows in outcomes:
        check(o, [], ours=False)
        assert o.dead_lettered == 0 and o.out_of_order == 0, o
        assert o.landed + o.counted == o.generated, o  # exactly
        if overflows:
            assert o.counted > 0, "the outage never filled the bound: the test proves nothing"
        else:
            assert o.counted == 0 and o.lost == 0, o
        mine = after & sent_trade_ids(exchange, conn.symbols)
        assert mine and mine <= conn.landed_ids, "a trade sent after the outage is missing"
        sink_lines = [line for line in conn.stderr.read_text(errors="replace").splitlines()
                      if "connector.sink.kafka_sink" in line]
        assert len(sink_lines) < 10 + down, "refused records are logged one by one"
    assert recovery < 60
