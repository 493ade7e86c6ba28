"""The local broker starts every time: any cluster id formats, a failed start
leaves nothing behind, and ``run`` says nothing until the broker is ready."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from connector.dev import kafka_broker as kb
from connector.dev.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def ids_beginning_with(prefix: str) -> str:
    """A valid KRaft cluster id (16 bytes, URL-safe base64) that begins with ``prefix``."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if cluster_id.startswith(prefix):
            return cluster_id


def meta_cluster_id(broker: KafkaBroker) -> str:
    meta = (broker._dir / "data" / "meta.properties").read_text()
    return next(line.split("=", 1)[1] for line in meta.splitlines()
                if line.startswith("cluster.id="))


@pytest.mark.parametrize("prefix", ["-", "--", "-t", "-c"])
def test_storage_formats_with_ids_that_begin_with_a_dash(prefix: str) -> None:
    cluster_id = ids_beginning_with(prefix)
    broker = KafkaBroker()
    try:
        broker._write_config()
        broker.format_storage(cluster_id)
        assert meta_cluster_id(broker) == cluster_id
    finally:
        broker.stop()


def test_a_broker_whose_id_begins_with_a_dash_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster_id = ids_beginning_with("-")
    monkeypatch.setattr(kb, "new_cluster_id", lambda: cluster_id)
    with KafkaBroker() as broker:
        assert broker.cluster_id == cluster_id
        assert broker._cluster_answering() == cluster_id


def test_generated_ids_never_begin_with_a_dash() -> None:
    ids = [kb.new_cluster_id() for _ in range(20_000)]  # ~300 would begin with "-" unchecked
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


def test_a_failed_start_leaves_no_temp_dir(kafka_broker: KafkaBroker) -> None:
    second = KafkaBroker(port=kafka_broker.port, start_timeout=60)
    with pytest.raises(RuntimeError, match="in use"):
        second.start()
    assert not second._dir.exists()


def test_stop_removes_the_temp_dir() -> None:
    with KafkaBroker() as broker:
        assert broker._dir.exists()
    assert not broker._dir.exists()


def test_cli_run_prints_nothing_before_ready() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connector.dev.kafka_broker", "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(f"Kafka {kb.KAFKA_VERSION} at "):
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert lines and lines[-1].startswith(f"Kafka {kb.KAFKA_VERSION} at "), lines
    # At most the broker's own "ready" log line before it; no client chatter.
    assert all(line.startswith(f"Kafka {kb.KAFKA_VERSION} ready at ") for line in lines[:-1]), \
        lines
