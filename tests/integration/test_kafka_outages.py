"""Kafka going away, against a real broker: readiness follows the client's
connection state, nothing on a sender's thread waits on Kafka beyond the
bound, and a connector started without Kafka keeps retrying, answers
/healthz, explains /readyz and exits 0 on SIGTERM at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from connector.config.model import KafkaConfig
from connector.dev.consume import read_all
from connector.dev.kafka_broker import KafkaBroker, free_port
from connector.sink.kafka_sink import KafkaSink

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _wait(cond: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if cond():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def test_readiness_follows_the_kafka_client_not_traffic() -> None:
    with KafkaBroker(start_timeout=180) as broker:
        sink = KafkaSink(KafkaConfig(bootstrap_servers=[broker.bootstrap_servers],
                                     dead_letter_topic="ready.dead-letter"))
        try:
            # No traffic at all: ready, because a broker connection is live.
            _wait(sink.kafka_reachable, 10, "an idle sink never became ready")
            assert sink.send("ready.data", b"k", b"v", [], time.monotonic_ns())
            assert sink.flush(30) == 0
            broker.kill()
            # A total outage shows at once, not after a minute of silence.
            _wait(lambda: not sink.kafka_reachable(), 10, "still ready with the broker dead")
            assert sink.send("ready.data", b"k", b"during", [], time.monotonic_ns())
            broker.start()
            _wait(lambda: sink.kafka_reachable() and sink.pending == 0, 120,
                  "not ready and drained after the broker came back")
        finally:
            sink.close(30)
        got = read_all(broker.bootstrap_servers, ["ready.data"])["ready.data"]
        assert [m.value for m in got] == [b"v", b"during"]


# The delivery timeout the outage outlives, short so that the test waits seconds, not
# minutes: what matters is the outage measured in delivery timeouts.
REQUEST_TIMEOUT_MS, DELIVERY_TIMEOUT_MS = 1000, 2000


def test_expired_records_never_block_a_sender() -> None:
    """Broker down past the delivery timeout: expired records are dead-lettered
    (or counted) by the sink's own thread; ``send`` never waits on Kafka's
    metadata, and everything accepted is accounted for."""
    from prometheus_client import REGISTRY

    def dropped() -> float:
        return sum(REGISTRY.get_sample_value("bybit_connector_dropped_records_total",
                                             {"reason": r}) or 0
                   for r in ("buffer_full", "dead_letter_failed", "shutdown_timeout"))

    with KafkaBroker(start_timeout=180) as broker:
        sink = KafkaSink(KafkaConfig(
            bootstrap_servers=[broker.bootstrap_servers], dead_letter_topic="expire.dlq",
            block_timeout_seconds=0.5, max_pending_records=100_000,
            producer={"request_timeout_ms": REQUEST_TIMEOUT_MS,
                      "delivery_timeout_ms": DELIVERY_TIMEOUT_MS}))
        before = dropped()
        assert sink.send("expire.data", b"k", b"warm", [], time.monotonic_ns())
        assert sink.flush(30) == 0
        broker.kill()
        slowest, sent, stop = 0.0, [0], threading.Event()

        def sender() -> None:
            nonlocal slowest
            while not stop.is_set():
                started = time.monotonic()
                sink.send("expire.data", b"k", b"x%d" % sent[0], [], time.monotonic_ns())
                slowest = max(slowest, time.monotonic() - started)
                sent[0] += 1
                time.sleep(0.002)

        thread = threading.Thread(target=sender)
        thread.start()
        # Over three delivery timeouts: expiries, dead letters, their expiries.
        time.sleep(3.5 * DELIVERY_TIMEOUT_MS / 1000)
        stop.set()
        thread.join()
        assert slowest < 1.5, f"a send waited {slowest:.1f} s on Kafka"
        broker.start()
        lost = sink.close(60)
        assert lost == 0
        got = read_all(broker.bootstrap_servers, ["expire.data", "expire.dlq"], timeout=60)
        landed = len(got["expire.data"]) - 1
        dead = len(got["expire.dlq"])
        counted = dropped() - before
        assert sent[0] == landed + dead + counted, (sent[0], landed, dead, counted)
        assert counted > 0  # the outage outlived the delivery timeout twice over


def test_unreachable_kafka_at_start_retries_and_stops_on_sigterm(tmp_path: Path) -> None:
    port, kafka_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
bybit:
  urls: {{v1: "ws://127.0.0.1:{free_port()}/spot/quote/ws/v1"}}
kafka:
  bootstrap_servers: ["127.0.0.1:{kafka_port}"]
metrics: {{host: 127.0.0.1, port: {port}}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [BTCUSDT]}}
""")
    err = tmp_path / "stderr"
    with open(err, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "connector", "run", "--config",
                                 str(config)], stderr=out, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def get(path: str) -> tuple[int, dict[str, object]]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        def attempts() -> int:
            return err.read_text().count("not reachable (attempt")

        def healthy() -> bool:
            try:
                return get("/healthz")[0] == 200
            except OSError:
                return False

        _wait(healthy, 30, "no /healthz while Kafka is down")
        # The supervisor ticks through every attempt, probe and backoff alike (the
        # 4th backoff lasts 8 s), so liveness (stale after 30 s) holds however long
        # Kafka stays away: the age of its last tick, sampled throughout, stays small.
        ages: list[float] = []

        def fifth_attempt() -> bool:
            status, body = get("/healthz")
            assert status == 200, body
            ages.append(float(body["seconds_since_last_tick"]))  # type: ignore[arg-type]
            return attempts() >= 5

        _wait(fifth_attempt, 90, "fewer than 5 attempts")
        assert max(ages) < 6, f"the supervisor stopped ticking for {max(ages):.1f} s"
        status, body = get("/readyz")
        assert status == 503
        kafka = body["kafka"]
        assert isinstance(kafka, dict)
        assert kafka["bootstrap_servers"] == [f"127.0.0.1:{kafka_port}"]
        assert kafka["last_error"]
        text = err.read_text()
        assert f"Kafka at 127.0.0.1:{kafka_port} not reachable" in text
        assert " kafka." not in text, "the Kafka client's own retry lines leaked"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        # The connector's own part is well under 2 s; the interpreter's exit on a
        # loaded machine gets a margin.
        assert time.monotonic() - started < 5
        stopped = re.search(r"stopped \((\d+\.\d+) s after the stop request\)",
                            err.read_text())
        assert stopped and float(stopped.group(1)) < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_close_with_the_broker_down_counts_and_returns_promptly() -> None:
    """SIGTERM during an outage: no waiting out the flush timeout for a broker
    that is not there; everything unacknowledged is counted."""
    from prometheus_client import REGISTRY

    def shutdown_drops() -> float:
        return REGISTRY.get_sample_value("bybit_connector_dropped_records_total",
                                         {"reason": "shutdown_timeout"}) or 0

    with KafkaBroker(start_timeout=180) as broker:
        sink = KafkaSink(KafkaConfig(bootstrap_servers=[broker.bootstrap_servers],
                                     dead_letter_topic="down.dlq", flush_timeout_seconds=30))
        assert sink.send("down.data", b"k", b"warm", [], time.monotonic_ns())
        assert sink.flush(30) == 0
        broker.kill()
        for i in range(100):
            assert sink.send("down.data", b"k", b"%d" % i, [], time.monotonic_ns())
        before = shutdown_drops()
        started = time.monotonic()
        assert sink.close() == 100
        assert time.monotonic() - started < 5
        assert shutdown_drops() - before == 100
