"""Alert rules and the Grafana dashboard, checked with the real promtool and a
real Prometheus server scraping live connector metrics."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from connector import metrics

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "bybit-kafka-connector" / "files"
DASHBOARD = FILES / "dashboard.json"
ALERTS = FILES / "alerts.yaml"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is needed (Debian package 'prometheus'; scripts/install_test_tools.sh)"
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=60)


def test_alert_rules_pass_promtool_check() -> None:
    result = run(promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 12 rules found" in result.stdout


def test_alert_unit_tests_fire_and_stay_quiet() -> None:
    result = run(promtool(), "test", "rules", "alerts_test.yaml", cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (Path(__file__).parent /
                                                   "alerts_test.yaml").read_text()))
    defined = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
               for r in g["rules"]}
    assert defined == tested


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def substituted(expr: str) -> str:
    return (expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            .replace("$stream", ".*").replace("$topic", ".*"))


def exported_names() -> set[str]:
    for reason in metrics.DROP_REASONS:
        metrics.dropped_records_total.labels(reason)
    names = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
        if family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_dashboard_is_generated_and_uses_its_datasource() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_dashboard

    assert DASHBOARD.read_text() == make_dashboard.render(), "run scripts/make_dashboard.py"
    board = dashboard()
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "instance", "stream", "topic"} <= names
    for p in board["panels"]:
        assert p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}"
                                        for t in p["targets"])


def test_dashboard_expressions_parse_and_use_exported_metrics(tmp_path: Path) -> None:
    exported = exported_names()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": substituted(e)}
        for i, e in enumerate(expressions())]}]}
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    for expr in expressions():
        for name in re.findall(r"\b((?:bybit_connector|process|python)_[a-z_]+)\b", expr):
            assert name in exported, f"{name} is not exported by the connector ({expr})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics_endpoint() -> Iterator[int]:
    """Live connector metrics (every family touched) on a local port."""
    m = metrics
    m.connection_up.labels("v1", "v1-0").set(1)
    m.subscriptions_configured.labels("v1", "trade").set(2)
    m.subscriptions_active.labels("v1", "trade").set(2)
    m.frames_received_total.labels("v1", "trade").inc(10)
    m.received_bytes_total.labels("v1", "trade").inc(1000)
    m.records_produced_total.labels("bybit.spot.v1.trade").inc(10)
    m.last_message_age.touch("v1", "trade", "BTCUSDT")
    for h in (m.event_lag_seconds.labels("v1", "trade"), m.send_lag_seconds.labels("v1", "trade"),
              m.delivery_latency_seconds.labels("bybit.spot.v1.trade"),
              m.heartbeat_rtt_seconds.labels("v1", "v1-0")):
        h.observe(0.01)
    m.producer_buffer_capacity_records.set(100000)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = generate_latest(REGISTRY)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
        metrics_endpoint: int) -> None:
    binary = shutil.which("prometheus")
    assert binary, "the prometheus server is needed (Debian package 'prometheus')"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "bybit-kafka-connector",
                                "static_configs": [{"targets":
                                                    [f"127.0.0.1:{metrics_endpoint}"]}]}]}))
        proc = subprocess.Popen([binary, f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def query(expr: str) -> list[Any]:
                url = (f"http://127.0.0.1:{port}/api/v1/query?"
                       + urllib.parse.urlencode({"query": expr}))
                with urllib.request.urlopen(url, timeout=5) as r:
                    body = json.loads(r.read())
                assert body["status"] == "success", body
                return list(body["data"]["result"])

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if query("bybit_connector_build_info"):
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            time.sleep(3)  # a few scrapes, so rate() has two points
            empty = []
            for expr in expressions():
                result = query(substituted(expr).replace("[1m]", "[30s]"))
                if not result:
                    empty.append(expr)
            # Counters that only move on trouble may legitimately have no increase yet, but
            # every panel's query must be valid and the core ones must show data.
            core = [e for e in expressions() if any(k in e for k in (
                "connection_up", "frames_received_total", "records_produced_total",
                "last_message_age", "delivery_latency", "producer_buffer"))]
            assert not [e for e in core if e in empty], empty
        finally:
            proc.terminate()
            proc.wait(timeout=20)
