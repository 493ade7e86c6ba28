"""The fault suite's table: one row per fault, printed at the end of every
run (whatever ``-s``) and written to ``bench-results/faults.md``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_rig import ConnectorProcess, Outcome

from connector.dev.kafka_broker import KafkaBroker

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "faults.md"
HEADER = ("| fault | generated | landed | dead-lettered | counted (dropped metric) | "
          "duplicated | out of order | recovery time |\n|---|---|---|---|---|---|---|---|")
_rows: list[Outcome] = []


@pytest.fixture
def record_outcome() -> Iterator[list[Outcome]]:
    """Append an ``Outcome`` to the table (before asserting on it)."""
    yield _rows


@pytest.fixture(autouse=True)
def no_leftover_connectors() -> Iterator[None]:
    """Kill (by pid) any connector process a failed test left running."""
    yield
    for conn in list(ConnectorProcess.running):
        conn.kill9()


@pytest.fixture(scope="module")
def fault_broker() -> Iterator[KafkaBroker]:
    """A broker of this module's own: the faults kill it."""
    with KafkaBroker(start_timeout=180) as broker:
        yield broker


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _rows:
        return
    table = "\n".join([HEADER, *(o.row() for o in _rows)])
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table + "\n")
