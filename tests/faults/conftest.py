"""The fault suite's fixtures. Its table (one row per fault) is printed and written
by tests/conftest.py, which also runs where a parallel run's reports arrive."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_rig import ConnectorProcess, Outcome

from connector.dev.kafka_broker import KafkaBroker

# The user property tests/conftest.py reads the rows from.
FAULT_ROWS_PROPERTY = "fault_rows"


@pytest.fixture
def record_outcome(request: pytest.FixtureRequest) -> Iterator[list[Outcome]]:
    """Append an ``Outcome`` to the table (before asserting on it). The rows travel
    in the test's report, so a parallel run's controller prints them too."""
    rows: list[Outcome] = []
    yield rows
    request.node.user_properties.append((FAULT_ROWS_PROPERTY, [o.row() for o in rows]))


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

