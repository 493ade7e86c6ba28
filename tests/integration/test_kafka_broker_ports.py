"""A local broker never mistakes another broker for itself: a taken port is
refused before Java starts, a broker answering on its port that is not its own
is detected, and no Java process is left behind either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.dev.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(
        f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_a_taken_port_is_refused_before_starting(kafka_broker: KafkaBroker) -> None:
    second = KafkaBroker(port=kafka_broker.port, start_timeout=60)
    with pytest.raises(RuntimeError, match=f"port {kafka_broker.port} .*in use"):
        second.start()
    assert second.pid is None


class _NoPortCheck(KafkaBroker):
    """As if another broker took the port between the check and Java's bind."""

    def check_ports_free(self) -> None:
        pass


def test_another_broker_answering_is_not_taken_for_ours(kafka_broker: KafkaBroker) -> None:
    second = _NoPortCheck(port=kafka_broker.port, start_timeout=60)
    with pytest.raises(RuntimeError, match=r"served by another broker .*, not this broker"):
        second.start()
    assert not alive(second.pid)


def test_cli_run_on_a_taken_port_fails_in_one_line(kafka_broker: KafkaBroker) -> None:
    done = subprocess.run([sys.executable, "-m", "connector.dev.kafka_broker", "run", "--port",
                           str(kafka_broker.port)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 1
    assert "ready" not in done.stdout and "Kafka 4" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: port {kafka_broker.port} on 127.0.0.1 is in use (another broker?)"]
