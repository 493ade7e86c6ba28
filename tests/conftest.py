"""Shared fixtures: one real Kafka broker per test session, unique topic names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.dev.kafka_broker import KafkaBroker
from connector.dev.schema_registry import SchemaRegistry

SAMPLES = Path(__file__).parent / "samples"


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
