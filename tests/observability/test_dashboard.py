"""The Grafana dashboard shipped with the Helm chart.

Static checks (structure, datasource variable, filters, metric names that
``connector.ops.metrics`` really exports), a PromQL parse of every expression with
``promtool``, and a live check: a real ``prometheus`` server scrapes a
connector-metrics process and every dashboard expression is queried through the
HTTP API.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from connector.ops import metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "bybit-kafka-connector" / "files" / "dashboard.json"
DS_REF = "${datasource}"

# Grafana variables and what to put in their place to get plain PromQL.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
    "$stream": ".*",
    "$topic": ".*",
}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in data_panels(dashboard) for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    # Longest names first so "$__rate_interval" is not eaten by a shorter one.
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTIONS[name])
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small tokenizer, enough for dashboards)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", s):
        if m.group(2) or m.group(1).lower() in PROMQL_KEYWORDS:
            continue  # a function call or an operator keyword
        names.add(m.group(1))
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matcher text) of every ``name{...}`` selector."""
    return re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", expr)


def exported_names() -> set[str]:
    """Every sample name the connector process exposes on /metrics."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "unknown": ("",),
    }
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def name_allowed(name: str, exported: set[str]) -> bool:
    return name in exported or name == "up" or name.startswith(("process_", "python_"))


def connector_label_names() -> dict[str, tuple[str, ...]]:
    """Sample name -> label names, for the connector's own metrics."""
    out: dict[str, tuple[str, ...]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            labels = tuple(obj._labelnames)
            for family in obj.describe():
                for suffix in ("", "_total", "_bucket", "_sum", "_count", "_info"):
                    out[family.name + suffix] = labels
    for family in metrics.last_message_age.collect():
        out[family.name] = tuple(family._labelnames)  # type: ignore[attr-defined]
    return out


# --- static checks -----------------------------------------------------------


def test_dashboard_identity() -> None:
    d = load_dashboard()
    assert "id" not in d, "a provisioned dashboard must not carry a numeric id"
    assert d["uid"] == "bybit-kafka-connector"
    assert d["title"] == "Bybit Kafka connector"
    assert 36 <= d["schemaVersion"] <= 41
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("instance", "stream", "topic"):
        v = variables[name]
        assert v["type"] == "query", name
        assert v["multi"] and v["includeAll"], name
        assert v["datasource"]["uid"] == DS_REF, name
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert query.startswith("label_values("), name
        assert query.endswith(f", {name})"), f"{name} must list the {name} label: {query}"


def test_every_panel_has_title_and_description() -> None:
    for panel in all_panels(load_dashboard()):
        assert panel.get("title", "").strip(), f"untitled panel: {panel}"
        if panel["type"] != "row":
            assert len(panel.get("description", "")) > 30, panel["title"]
            assert "ealthy" in panel["description"], (
                f"{panel['title']}: description must say what healthy looks like"
            )
            assert panel.get("targets"), f"{panel['title']} has no query"


def test_datasource_variable_used_everywhere() -> None:
    d = load_dashboard()
    for panel in data_panels(d):
        assert panel["datasource"] == {"type": "prometheus", "uid": DS_REF}, panel["title"]
    for panel, target in targets(d):
        assert target["datasource"] == {"type": "prometheus", "uid": DS_REF}, panel["title"]
    assert '"uid": "${datasource}"' in DASHBOARD.read_text()
    # No hard-coded data source anywhere else (e.g. a uid pasted from an export).
    uids = re.findall(r'"uid":\s*"([^"]*)"', DASHBOARD.read_text())
    assert set(uids) <= {DS_REF, "-- Grafana --", d["uid"]}, set(uids)


def test_rate_interval_and_filters() -> None:
    labels = connector_label_names()
    for panel, target in targets(load_dashboard()):
        expr = target["expr"]
        where = f"{panel['title']} / {target['refId']}: {expr}"
        assert "rate(" not in expr or "[$__rate_interval]" in expr, where
        found = selectors(expr)
        assert found, f"no selector in {where}"
        for name, matchers in found:
            assert 'instance=~"$instance"' in matchers, f"{name}: no instance filter in {where}"
            for label in ("stream", "topic"):
                if label in labels.get(name, ()):
                    assert f'{label}=~"${label}"' in matchers, (
                        f"{name} has a {label} label but is not filtered by ${label} in {where}"
                    )


def test_metric_names_are_exported() -> None:
    exported = exported_names()
    # Sanity of the collection itself.
    assert "bybit_connector_frames_received_total" in exported
    assert "bybit_connector_event_lag_seconds_bucket" in exported
    assert "bybit_connector_last_message_age_seconds" in exported
    d = load_dashboard()
    exprs = [t["expr"] for _, t in targets(d)]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", v["query"]["query"]))
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric found in {expr}"
        unknown = {n for n in names if not name_allowed(n, exported)}
        assert not unknown, f"{expr} uses metrics the connector does not export: {unknown}"
        used |= names
    # The panels the brief asks for are all there.
    for required in (
        "bybit_connector_connection_up",
        "bybit_connector_subscriptions_configured",
        "bybit_connector_subscriptions_active",
        "bybit_connector_subscription_failures_total",
        "bybit_connector_frames_received_total",
        "bybit_connector_records_produced_total",
        "bybit_connector_event_lag_seconds_bucket",
        "bybit_connector_send_lag_seconds_bucket",
        "bybit_connector_read_lag_seconds",
        "bybit_connector_delivery_latency_seconds_bucket",
        "bybit_connector_last_message_age_seconds",
        "bybit_connector_reconnect_attempts_total",
        "bybit_connector_disconnects_total",
        "bybit_connector_heartbeat_rtt_seconds_bucket",
        "bybit_connector_pong_timeouts_total",
        "bybit_connector_auth_failures_total",
        "bybit_connector_kafka_send_errors_total",
        "bybit_connector_dropped_records_total",
        "bybit_connector_dead_letter_records_total",
        "bybit_connector_producer_buffer_records",
        "bybit_connector_producer_buffer_capacity_records",
        "bybit_connector_undecodable_frames_total",
        "bybit_connector_duplicates_suppressed_total",
        "bybit_connector_record_fields_missing_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert required in used, f"no panel shows {required}"


def test_tokenizer() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, topic) (rate(a_bucket{x=~"y|z"}[5m]))) '
        "/ on (instance) group_left (version) b_info > bool 0 or vector(1)"
    )
    assert metric_names(expr) == {"a_bucket", "b_info"}


# --- promtool parse ------------------------------------------------------------

promtool = shutil.which("promtool")
prometheus = shutil.which("prometheus")


@pytest.mark.skipif(promtool is None, reason="promtool not on PATH (Debian package prometheus)")
def test_expressions_parse_with_promtool(tmp_path: Path) -> None:
    rules = [
        {
            "record": f"dashboard:panel{panel['id']}:{target['refId'].lower()}",
            "expr": substitute(target["expr"]),
        }
        for panel, target in targets(load_dashboard())
    ]
    rule_file = tmp_path / "dashboard_rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [str(promtool), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


# --- live Prometheus -------------------------------------------------------------

# A connector-shaped metrics process: the real metric definitions, children as
# service/connection/sink create them, and a trickle of traffic.
EXPORTER = textwrap.dedent("""
    import sys, threading, time
    from prometheus_client import start_http_server
    from connector.ops import metrics as m

    m.init_reason_children(stream_topics=[("v5", "orderbook.50")])
    subs = [("v5", "orderbook.50", "BTCUSDT"), ("v5", "publicTrade", "BTCUSDT"),
            ("v5-private", "execution.spot", ""),
            ("v1", "trade", "BTCUSDT"), ("v2", "depth", "ETHUSDT"),
            ("private", "executionReport", "")]
    for stream, topic, _ in subs:
        m.subscriptions_configured.labels(stream, topic).inc()
        if stream != "private":
            m.subscriptions_active.labels(stream, topic).inc()
        m.duplicates_suppressed_total.labels(stream, topic)
        m.unrouted_events_total.labels(stream, topic)
        m.subscription_failures_total.labels(stream, topic, "ack_timeout")
    m.last_message_age.register(subs)
    for stream in ("v5", "v5-private", "v1", "v2", "private"):
        conn = stream + "-0"
        m.connect_budget_waits_total.labels(stream, conn)
        m.connection_up.labels(stream, conn).set(1)
        m.connects_total.labels(stream, conn).inc()
        m.reconnect_attempts_total.labels(stream, conn)
        m.reconnect_backoff_seconds.labels(stream, conn).set(0)
        m.read_lag_seconds.labels(stream, conn).set(0.02)
        m.pong_timeouts_total.labels(stream, conn)
        m.server_pings_total.labels(stream, conn).inc()
        for reason in m.DISCONNECT_REASONS:
            m.disconnects_total.labels(stream, conn, reason)
        m.undecodable_frames_total.labels(stream, "invalid_json")
        m.subscription_ack_seconds.labels(stream).observe(0.05)
    m.auth_failures_total.labels("private-0", "timeout")
    m.kafka_send_errors_total.labels("bybit.spot.v1.trade", "KafkaTimeoutError")
    m.schema_registry_requests_total.labels("register", "ok").inc()
    m.producer_buffer_capacity_records.set(10000)
    m.producer_buffer_records.set(12)
    m.producer_restarts_total.inc(0)
    m.record_fields_missing_total.labels("v5_wallet", "coins.usd_value")

    def traffic():
        while True:
            for stream, topic, symbol in subs:
                m.frames_received_total.labels(stream, topic).inc()
                m.received_bytes_total.labels(stream, topic).inc(300)
                m.event_lag_seconds.labels(stream, topic).observe(0.03)
                m.send_lag_seconds.labels(stream, topic).observe(0.02)
                m.last_message_age.touch(stream, topic, symbol)
                kafka_topic = f"bybit.spot.{stream}.{topic}"
                m.records_produced_total.labels(kafka_topic).inc()
                m.produced_bytes_total.labels(kafka_topic).inc(200)
                m.delivery_latency_seconds.labels(kafka_topic).observe(0.01)
            for stream in ("v1", "v2", "private"):
                m.heartbeat_rtt_seconds.labels(stream, stream + "-0").observe(0.02)
            time.sleep(0.1)

    threading.Thread(target=traffic, daemon=True).start()
    server, _ = start_http_server(0, addr="127.0.0.1")
    print(server.server_port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
""")

# Panels whose main query must return data from a connector that runs.
MUST_HAVE_DATA = {
    "Connections up",
    "Connection state",
    "Subscriptions configured vs active",
    "Messages received by topic",
    "Records produced by Kafka topic",
    "Last message age by subscription",
    "Event lag p50 / p99 (Bybit event time to receive)",
    "Delivery latency p50 / p99 (receive to Kafka ack)",
    "Heartbeat RTT p50 / p99",
    "Producer buffer usage",
    "Dropped records by reason",
    "CPU",
    "Resident memory",
    "Version / uptime",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
        return json.loads(exc.read())  # type: ignore[no-any-return]


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def live_prometheus(tmp_path: Path) -> Iterator[str]:
    if prometheus is None:
        pytest.skip("prometheus server not on PATH (Debian package prometheus)")
    exporter = subprocess.Popen(
        [sys.executable, "-c", EXPORTER],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    server = None
    try:
        assert exporter.stdout is not None
        port_line = exporter.stdout.readline()
        assert port_line.strip().isdigit(), "the metrics process did not start"
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "bybit-kafka-connector",
                            "static_configs": [{"targets": [f"127.0.0.1:{port_line.strip()}"]}],
                        }
                    ],
                }
            )
        )
        web_port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        server = subprocess.Popen(
            [
                str(prometheus),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "no scrapes within 30 s"
            try:
                # rate() needs two samples; wait for a few scrapes.
                res = api(
                    base,
                    "/api/v1/query",
                    query='count_over_time(up{job="bybit-kafka-connector"}[1m])',
                )
                result = res.get("data", {}).get("result", [])
                if result and float(result[0]["value"][1]) >= 4:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        yield base
    finally:
        if server is not None:
            stop(server)
        if exporter.stdin is not None:
            exporter.stdin.close()
        stop(exporter)


@pytest.mark.timeout(60)
def test_expressions_against_live_prometheus(live_prometheus: str) -> None:
    base = live_prometheus
    # Every name the dashboard uses is really scraped from a connector process.
    res = api(base, "/api/v1/label/__name__/values")
    scraped = set(res["data"])
    d = load_dashboard()
    missing = {n for _, t in targets(d) for n in metric_names(t["expr"])} - scraped
    assert not missing, f"not exposed by a connector process: {missing}"

    failures, empty = [], []
    for panel, target in targets(d):
        expr = substitute(target["expr"])
        res = api(base, "/api/v1/query", query=expr)
        if res.get("status") != "success":
            failures.append(f"{panel['title']}: {expr}: {res.get('error')}")
        elif panel["title"] in MUST_HAVE_DATA and target["refId"] == "A":
            if not res["data"]["result"]:
                empty.append(f"{panel['title']}: {expr}")
    assert not failures, "\n".join(failures)
    assert not empty, "no data for:\n" + "\n".join(empty)
    # Titles in MUST_HAVE_DATA exist (a renamed panel must not silently pass).
    assert {p["title"] for p in data_panels(d)} >= MUST_HAVE_DATA

    # The traffic shows up as a rate, not just as a series.
    rate = api(
        base,
        "/api/v1/query",
        query=substitute(
            next(t["expr"] for p, t in targets(d) if p["title"] == "Messages received by topic")
        ),
    )
    assert any(float(r["value"][1]) > 0 for r in rate["data"]["result"]), rate
