"""``validate`` shows what ``run`` will use (WebSocket URLs, Kafka servers) and a
closed output pipe ends it quietly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
bybit:
  network: testnet
  urls: {{v5: "ws://127.0.0.1:8765/v5/public/spot"}}
  credentials: {{api_key: k, api_secret: s}}
kafka: {{bootstrap_servers: ["k1:9092", "k2:9093"]}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [BTCUSDT]}}
{more}
"""


def validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], more: str = "",
             *flags: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(more=more))
    assert main(["validate", "--config", str(path), *flags]) == 0
    return capsys.readouterr().out


def test_overridden_urls_are_shown_and_the_network_is_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = validate(tmp_path, capsys)
    assert "testnet" not in out and "network" not in out, out
    assert "bybit v5 -> ws://127.0.0.1:8765/v5/public/spot (bybit.urls)" in out.splitlines()
    assert "kafka -> k1:9092,k2:9093" in out.splitlines()


def test_network_urls_are_shown_with_the_network(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = validate(tmp_path, capsys, "  - {stream: v5-private, topic: wallet}")
    lines = out.splitlines()
    assert lines[0] == "config OK — connections v5: 1, v5-private: 1, serialization avro"
    assert "bybit v5-private -> wss://stream-testnet.bybit.com/v5/private (network testnet)" \
        in lines, out


def test_json_plan_has_urls_and_servers(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    plan = json.loads(validate(tmp_path, capsys, "", "--json"))
    assert plan["network"] is None
    assert plan["urls"] == {"v5": "ws://127.0.0.1:8765/v5/public/spot"}
    assert plan["kafka"]["bootstrap_servers"] == ["k1:9092", "k2:9093"]


def test_a_closed_pipe_ends_validate_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(more=""))
    read, write = os.pipe()
    os.close(read)  # as `| head` does once it has what it wants
    try:
        done = subprocess.run([sys.executable, "-m", "connector", "validate", "--config",
                               str(path), "--json"], stdout=write, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, timeout=60)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1
