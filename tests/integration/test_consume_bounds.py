"""``consume`` always ends: a quiet topic ends ``--max-messages`` without
``--timeout``, and no broker is one error line within seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaProducer

from connector.dev.consume import BOOTSTRAP_SECONDS, MAX_MESSAGES_IDLE_SECONDS
from connector.dev.kafka_broker import KafkaBroker, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def consume(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "connector", "consume", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    return done, time.monotonic() - started


def test_max_messages_ends_on_a_quiet_topic(kafka_broker: KafkaBroker, topic_name: str) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    try:
        for i in range(2):
            producer.send(topic_name, f"not avro {i}".encode()).get(timeout=30)
    finally:
        producer.close()
    done, took = consume("--topic", topic_name, "--bootstrap-servers",
                         kafka_broker.bootstrap_servers, "--from-beginning",
                         "--max-messages", "5")
    assert done.returncode == 0, done.stderr
    assert len([json.loads(line) for line in done.stdout.splitlines()]) == 2
    assert done.stderr.strip() == (f"consume: 2 of 5 messages; none for "
                                   f"{MAX_MESSAGES_IDLE_SECONDS:g} s")
    assert took < MAX_MESSAGES_IDLE_SECONDS + 20


def test_no_broker_is_one_error_line_within_seconds() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done, took = consume("--topic", "t", "--bootstrap-servers", address)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: Kafka at {address} not reachable (cannot connect: {address}: "
        "[Errno 111] Connection refused)"]
    assert took < BOOTSTRAP_SECONDS + 5
