"""The Prometheus alert rules shipped with the Helm chart.

``promtool check rules`` validates the rule file, ``promtool test rules`` runs
the unit tests in ``alerts_test.yaml`` (each alert firing on synthetic series,
look-alikes that must not fire, and a healthy connector that fires nothing),
and the checks below keep the rule file's conventions.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULES = ROOT / "helm" / "bybit-kafka-connector" / "files" / "alerts.yaml"
UNIT_TESTS = HERE / "alerts_test.yaml"

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not on PATH (Debian package prometheus provides it)"
)

# Shared PromQL helpers live next door, in the dashboard test.
_spec = importlib.util.spec_from_file_location("_dashboard_checks", HERE / "test_dashboard.py")
assert _spec is not None and _spec.loader is not None
dashboard_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard_checks)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    groups = doc["groups"]
    assert [g["name"] for g in groups] == ["bybit-kafka-connector"]
    return list(groups[0]["rules"])


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert promtool is not None
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@needs_promtool
def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


@needs_promtool
def test_promtool_unit_tests() -> None:
    # rule_files in alerts_test.yaml are relative to that file, so any cwd works.
    proc = run_promtool("test", "rules", str(UNIT_TESTS.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_point_at_the_shipped_rules() -> None:
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    assert [(HERE / f).resolve() for f in doc["rule_files"]] == [RULES]


def test_every_alert_fires_and_stays_quiet_in_a_unit_test() -> None:
    names = {r["alert"] for r in rules()}
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert names - fired == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown not firing"
    assert fired | quiet <= names, "unit tests name alerts that do not exist"


def test_alert_conventions() -> None:
    seen = set()
    for rule in rules():
        name = rule["alert"]
        assert name.startswith("BybitConnector"), name
        assert name not in seen, f"duplicate alert {name}"
        seen.add(name)
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        assert "Runbook:" in ann["description"], f"{name}: description needs a runbook hint"
        if not rule["expr"].startswith("absent("):
            text = ann["summary"] + ann["description"]
            assert "{{ $labels." in text, f"{name}: annotations should name the series"


def test_alerts_use_exported_metrics_only() -> None:
    exported = dashboard_checks.exported_names()
    for rule in rules():
        names = dashboard_checks.metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = {n for n in names if not dashboard_checks.name_allowed(n, exported)}
        assert not unknown, f"{rule['alert']} uses metrics the connector does not export: {unknown}"


def test_private_stream_is_exempt_from_the_stall_alert() -> None:
    stall = next(r for r in rules() if r["alert"] == "BybitConnectorStreamStalled")
    assert 'stream!="private"' in stall["expr"]
