"""Writes the Grafana dashboard (helm/bybit-kafka-connector/files/dashboard.json).

The dashboard is code: edit the panels here, then run
``python scripts/make_dashboard.py``. A test checks the committed JSON is
this script's output and that every expression parses and uses only metrics
the connector exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "helm/bybit-kafka-connector/files/dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
SST = f'{SEL},stream=~"$stream"'
SSTT = f'{SST},topic=~"$topic"'
P = "bybit_connector_"


def target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def panel(title: str, description: str, targets: list[dict[str, Any]], x: int, y: int,
          w: int = 12, h: int = 8, kind: str = "timeseries", unit: str = "short",
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
    }
    if extra:
        out.update(extra)
    return out


def row(title: str, y: int) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}}


def quantiles(metric: str, by: str, selector: str) -> list[dict[str, Any]]:
    return [target(f"histogram_quantile({q}, sum by ({by}, le) "
                   f"(rate({P}{metric}_bucket{{{selector}}}[$__rate_interval])))",
                   f"p{int(q * 100)} {{{{{by}}}}}", ref)
            for q, ref in ((0.5, "A"), (0.99, "B"))]


def panels() -> list[dict[str, Any]]:
    out = [row("Connections", 0)]
    out.append(panel(
        "Connection state", "1 = connected (and authenticated for private). Healthy: all 1.",
        [target(f"{P}connection_up{{{SST}}}", "{{stream}} {{connection}}")], 0, 1, w=8,
        kind="stat", extra={"options": {"colorMode": "background", "graphMode": "none"},
                            "fieldConfig": {"defaults": {"unit": "short", "mappings": [
                                {"type": "value", "options": {
                                    "0": {"text": "DOWN", "color": "red"},
                                    "1": {"text": "UP", "color": "green"}}}]},
                                "overrides": []}}))
    out.append(panel(
        "Subscriptions: configured vs active",
        "Active (acknowledged) should equal configured. A gap means subscriptions failing.",
        [target(f"sum by (stream, topic) ({P}subscriptions_configured{{{SSTT}}})",
                "configured {{stream}} {{topic}}", "A"),
         target(f"sum by (stream, topic) ({P}subscriptions_active{{{SSTT}}})",
                "active {{stream}} {{topic}}", "B")], 8, 1, w=8))
    out.append(panel(
        "Reconnects and disconnects",
        "Reconnect attempts and disconnects by reason. Healthy: flat, with rare spikes.",
        [target(f"sum by (connection) (increase({P}reconnect_attempts_total{{{SST}}}"
                "[$__rate_interval]))", "attempts {{connection}}", "A"),
         target(f"sum by (reason) (increase({P}disconnects_total{{{SST}}}"
                "[$__rate_interval]))", "disconnect {{reason}}", "B")], 16, 1, w=8))
    out.append(panel(
        "Heartbeat round trip", "Ping to pong time. Healthy: tens of ms.",
        quantiles("heartbeat_rtt_seconds", "connection", SST), 0, 9, w=8, unit="s"))
    out.append(panel(
        "Pong timeouts and auth failures", "Both should stay at 0.",
        [target(f"sum by (connection) (increase({P}pong_timeouts_total{{{SST}}}"
                "[$__rate_interval]))", "pong timeout {{connection}}", "A"),
         target(f"sum by (reason) (increase({P}auth_failures_total{{{SEL}}}"
                "[$__rate_interval]))", "auth {{reason}}", "B")], 8, 9, w=8))
    out.append(panel(
        "Reconnect backoff", "Current delay before the next reconnect; 0 while connected.",
        [target(f"{P}reconnect_backoff_seconds{{{SST}}}", "{{connection}}")], 16, 9, w=8,
        unit="s"))
    out.append(row("Data", 17))
    out.append(panel(
        "Messages received by topic", "Frames per second from Bybit, by stream and topic.",
        [target(f"sum by (stream, topic) (rate({P}frames_received_total{{{SSTT}}}"
                "[$__rate_interval]))", "{{stream}} {{topic}}")], 0, 18, unit="cps"))
    out.append(panel(
        "Records produced by Kafka topic", "Records acknowledged by Kafka per second.",
        [target(f"sum by (kafka_topic) (rate({P}records_produced_total{{{SEL}}}"
                "[$__rate_interval]))", "{{kafka_topic}}")], 12, 18, unit="cps"))
    out.append(panel(
        "Last message age by subscription",
        "Seconds since each subscription last delivered. Public topics: below 1 s when "
        "healthy; private topics only move on account activity.",
        [target(f"sort_desc({P}last_message_age_seconds{{{SSTT}}})",
                "{{stream}} {{topic}} {{symbol}}")], 0, 26, kind="bargauge", unit="s",
        extra={"options": {"displayMode": "gradient", "orientation": "horizontal"}}))
    out.append(panel(
        "Received bytes", "Bytes per second from Bybit (after decompression).",
        [target(f"sum by (stream) (rate({P}received_bytes_total{{{SSTT}}}"
                "[$__rate_interval]))", "{{stream}}")], 12, 26, unit="Bps"))
    out.append(row("Lag", 34))
    out.append(panel(
        "Bybit event time to receive", "p50/p99; includes clock offset to Bybit.",
        quantiles("event_lag_seconds", "topic", SSTT), 0, 35, w=8, unit="s"))
    out.append(panel(
        "Bybit send time to receive", "p50/p99 of v1 sendTime to receive.",
        quantiles("send_lag_seconds", "topic", SSTT), 8, 35, w=8, unit="s"))
    out.append(panel(
        "Receive to Kafka acknowledgement", "p50/p99 time from the WebSocket to Kafka's ack.",
        quantiles("delivery_latency_seconds", "kafka_topic", SEL), 16, 35, w=8, unit="s"))
    out.append(row("Kafka and losses", 43))
    out.append(panel(
        "Dropped, dead-lettered, send errors",
        "Dropped must be 0. Dead letters and send errors should be rare.",
        [target(f"sum by (reason) (increase({P}dropped_records_total{{{SEL}}}"
                "[$__rate_interval]))", "dropped {{reason}}", "A"),
         target(f"sum by (reason) (increase({P}dead_letter_records_total{{{SEL}}}"
                "[$__rate_interval]))", "dead letter {{reason}}", "B"),
         target(f"sum by (reason) (increase({P}kafka_send_errors_total{{{SEL}}}"
                "[$__rate_interval]))", "send error {{reason}}", "C")], 0, 44, w=8))
    out.append(panel(
        "Producer buffer usage",
        "Unacknowledged records over the bound; at 100 % records are dropped.",
        [target(f"{P}producer_buffer_records{{{SEL}}} / "
                f"{P}producer_buffer_capacity_records{{{SEL}}}", "{{instance}}")],
        8, 44, w=8, kind="gauge", unit="percentunit",
        extra={"fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1},
                               "overrides": []}}))
    out.append(panel(
        "Undecodable frames and duplicates suppressed",
        "Undecodable frames go to the dead-letter topic; duplicates are v1 trade replays.",
        [target(f"sum by (reason) (increase({P}undecodable_frames_total{{{SST}}}"
                "[$__rate_interval]))", "undecodable {{reason}}", "A"),
         target(f"sum by (topic) (increase({P}duplicates_suppressed_total{{{SSTT}}}"
                "[$__rate_interval]))", "duplicates {{topic}}", "B")], 16, 44, w=8))
    out.append(row("Process", 52))
    out.append(panel(
        "CPU", "CPU seconds per second used by the connector process.",
        [target(f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])",
                "{{instance}}")], 0, 53, unit="percentunit"))
    out.append(panel(
        "Memory", "Resident memory of the connector process.",
        [target(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")], 12, 53,
        unit="bytes"))
    for i, p in enumerate(out, start=1):
        p["id"] = i
    return out


def variable(name: str, query: str, label: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": "All", "value": "$__all"}, "sort": 1}


def dashboard() -> dict[str, Any]:
    return {
        "uid": "bybit-kafka-connector",
        "title": "Bybit Kafka connector",
        "description": "Connection health, data flow, lag and losses of bybit-kafka-connector.",
        "tags": ["bybit", "kafka", "connector"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "editable": True,
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            variable("instance", f"label_values({P}build_info, instance)", "Instance"),
            variable("stream", f'label_values({P}connection_up{{{SEL}}}, stream)', "Stream"),
            variable("topic", f'label_values({P}frames_received_total{{{SST}}}, topic)',
                     "Topic"),
        ]},
        "panels": panels(),
        "annotations": {"list": []},
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
