"""Shared fixtures: one real Kafka broker per test session, unique topic names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.dev.kafka_broker import KafkaBroker
from connector.dev.schema_registry import SchemaRegistry

SAMPLES = Path(__file__).parent / "samples"
TESTS = Path(__file__).parent
# Run order: fast feedback first, the fault suite (the longest) last.
ORDER = ("unit", "helm", "observability", "install", "integration", "faults")
# Folders whose tests take seconds to minutes each: one line per test, with its time.
TIMED = ("install", "integration", "faults")


def _folder(path: Path) -> str:
    try:
        return path.relative_to(TESTS).parts[0]
    except ValueError:
        return ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast folders first (stable: the order inside a folder is kept)."""
    rank = {name: i for i, name in enumerate(ORDER)}
    items.sort(key=lambda item: rank.get(_folder(item.path), len(ORDER)))


_phases: dict[str, list[pytest.TestReport]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Under -q, a line per long test (outcome, seconds, name), so a long run says
    what it is doing; -v already prints one."""
    if _folder(Path(report.fspath).resolve()) not in TIMED:
        return
    _phases.setdefault(report.nodeid, []).append(report)
    if report.when != "teardown":
        return
    phases = _phases.pop(report.nodeid)
    reporter = _config.pluginmanager.get_plugin("terminalreporter") if _config else None
    if reporter is None or reporter.verbosity > 0:
        return
    outcome = next((r.outcome for r in phases if r.outcome != "passed"), "passed")
    seconds = sum(r.duration for r in phases)
    reporter.write_line(f" {outcome:7} {seconds:6.1f} s  {report.nodeid}")


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A real single-node KRaft broker on 127.0.0.1 (Apache Kafka from Maven Central)."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[SchemaRegistry]:
    """A real Confluent-compatible registry (Apicurio from Maven Central), BACKWARD rule."""
    with SchemaRegistry() as registry:
        yield registry


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A Kafka topic name no other test uses."""
    return f"test.{request.node.name[:60]}.{uuid.uuid4().hex[:8]}".replace("[", "_").replace(
        "]", "_")
