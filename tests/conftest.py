"""Shared fixtures: one real Kafka broker per test session (per worker under
``-n``), unique topic names; the run order and, in parallel runs (``make test``:
``-n 4 --dist loadfile``), which tests stay together on one worker."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.dev.kafka_broker import KafkaBroker
from connector.dev.schema_registry import SchemaRegistry

SAMPLES = Path(__file__).parent / "samples"
TESTS = Path(__file__).parent
# Run order: fast feedback first, the fault suite (the longest) last.
ORDER = ("unit", "helm", "observability", "install", "integration", "faults")
# In parallel (``-n``), longest first: the fault suite's and the integration tests'
# files (tens of seconds to a minute or two each) start at once, and the many short
# files fill the workers' last minutes, so the run does not end waiting on one file.
PARALLEL_ORDER = ("faults", "integration", "install", "unit", "helm", "observability")
# Folders whose tests take seconds to minutes each: one line per test, with its time.
TIMED = ("install", "integration", "faults")


def _folder(nodeid: str) -> str:
    """The folder under tests/ of a node id (ids are relative to the rootdir)."""
    parts = nodeid.split("::", 1)[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == TESTS.name else ""


def _parallel(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput") or getattr(config.option, "dist", "no") != "no"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fast folders first (stable: the order inside a folder is kept); in parallel,
    the fault suite first."""
    order = PARALLEL_ORDER if _parallel(config) else ORDER
    rank = {name: i for i, name in enumerate(order)}
    items.sort(key=lambda item: rank.get(_folder(item.nodeid), len(order)))


# A test function that takes the session's schema registry.
_USES_REGISTRY = re.compile(r"def test_\w+\([^)]*\bschema_registry\b")


def _scope(nodeid: str) -> str:
    """A parallel run's unit of work: a test file (its tests run in order on one
    worker, with the module's fixtures, as in a serial run), and every file whose
    tests take the schema registry together (a JVM that takes CPU seconds to
    start: one for the run, not one per worker)."""
    path = nodeid.split("::", 1)[0]
    try:
        source = (TESTS.parent / path).read_text()
    except OSError:
        return path
    return "schema_registry" if _USES_REGISTRY.search(source) else path


class _Scheduling:
    """Registered only where xdist is (its hook is unknown to pytest otherwise)."""

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        if config.option.dist != "loadfile":
            return None
        from xdist.scheduler import LoadFileScheduling

        class RegistryAwareLoadFile(LoadFileScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _scope(nodeid)

        return RegistryAwareLoadFile(config, log)


_phases: dict[str, list[pytest.TestReport]] = {}
_config: pytest.Config | None = None
# The fault suite's table: its tests hand their rows over in ``user_properties``
# (a parallel run's tests run in worker processes; their reports reach this, the
# controlling, process), printed at the end of every run (whatever ``-s``) and
# written to ``bench-results/faults.md``.
FAULT_ROWS_PROPERTY = "fault_rows"  # as tests/faults/conftest.py names it
FAULT_RESULTS = TESTS.parent / "bench-results" / "faults.md"
FAULT_HEADER = ("| fault | generated | landed | dead-lettered | counted (dropped metric) | "
                "duplicated | out of order | recovery time |\n|---|---|---|---|---|---|---|---|")
fault_rows: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Scheduling(), "bybit-test-scheduling")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Under -q, a line per long test (outcome, seconds, name, and the worker in a
    parallel run), so a long run says what it is doing; -v already prints one.
    Runs where the reports arrive: in-process, or on the controller under ``-n``."""
    if _config is None or hasattr(_config, "workerinput"):
        return
    if report.when == "teardown":
        for name, value in report.user_properties:
            if name == FAULT_ROWS_PROPERTY:
                fault_rows.extend(value)
    if _folder(report.nodeid) not in TIMED:
        return
    _phases.setdefault(report.nodeid, []).append(report)
    if report.when != "teardown":
        return
    phases = _phases.pop(report.nodeid)
    reporter = _config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or reporter.verbosity > 0:
        return
    outcome = next((r.outcome for r in phases if r.outcome != "passed"), "passed")
    seconds = sum(r.duration for r in phases)
    node = getattr(report, "node", None)
    worker = f"[{node.gateway.id}] " if node is not None else ""
    reporter.write_line(f" {outcome:7} {seconds:6.1f} s  {worker}{report.nodeid}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not fault_rows:
        return
    table = "\n".join([FAULT_HEADER, *fault_rows])
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(table)
    FAULT_RESULTS.parent.mkdir(exist_ok=True)
    FAULT_RESULTS.write_text(table + "\n")


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
