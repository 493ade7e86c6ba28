"""Today's legacy schemas are a compatible evolution of the 0.1.0 ones.

Ingestion jobs already read the 0.1.0 schemas (copied in
``tests/samples/avro-0.1.0/``). For every legacy kind: the 0.1.0 schema is
registered in a real registry under FULL compatibility, then today's must be
accepted as the next version; a record written with 0.1.0 reads with today's
schema (new fields take their defaults) and a record written today reads with
0.1.0's (new fields ignored), by Avro schema resolution (fastavro).
"""

from __future__ import annotations

import io
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import fastavro
import pytest

from connector.bybit.events import MarketData, PrivateData, Stamp
from connector.bybit.legacy.frames import decode
from connector.bybit.topics import LEGACY_STREAMS, TOPICS
from connector.dev.schema_registry import SchemaRegistry
from connector.records import MAPPERS, load_schema
from connector.serde.registry import SchemaRegistryClient, subject_for
from connector.serde.serializers import canonical_schema

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
OLD = SAMPLES / "avro-0.1.0"
STAMP = Stamp(wall_ms=1_700_000_000_123, mono_ns=1)
KINDS = sorted({t.kind for t in TOPICS if t.stream in LEGACY_STREAMS})
SAMPLE_OF = {"v1_trade": "v1_trade", "v1_realtimes": "v1_realtimes", "v1_kline": "v1_kline",
             "v1_depth": "v1_depth", "v1_merged_depth": "v1_mergeddepth",
             "v1_diff_depth": "v1_diffdepth_snapshot", "v1_lt": "v1_lt", "v2_depth": "v2_depth",
             "v2_kline": "v2_kline", "v2_trade": "v2_trade", "v2_book_ticker": "v2_bookticker",
             "v2_realtimes": "v2_realtimes"}


def record_today(kind: str) -> dict[str, Any]:
    """A record as the connector writes it today, from the kind's sample."""
    if kind.startswith("private_"):
        raw = json.loads((SAMPLES / f"{kind}.json").read_text())
        events = tuple(raw if isinstance(raw, list) else [raw])
        rec: dict[str, Any] = MAPPERS[kind](events[0], PrivateData(events, STAMP))
        return rec
    name = SAMPLE_OF[kind]
    event = decode((SAMPLES / f"{name}.json").read_text(), "v1" if name[1] == "1" else "v2",
                   STAMP)
    assert isinstance(event, MarketData)
    recs: list[dict[str, Any]] = MAPPERS[kind](event)
    return recs[0]


def write(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def read(data: bytes, writer: dict[str, Any], reader: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment,call-arg]
        io.BytesIO(data), fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    return result


def set_subject_compatibility(registry: SchemaRegistry, subject: str, level: str) -> None:
    request = urllib.request.Request(
        f"{registry.url}/config/{subject}", method="PUT",
        data=json.dumps({"compatibility": level}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_every_legacy_kind_has_a_0_1_0_fixture() -> None:
    assert sorted(p.stem for p in OLD.glob("*.avsc")) == KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_today_is_a_full_compatible_evolution_of_0_1_0(
        kind: str, schema_registry: SchemaRegistry) -> None:
    old = json.loads((OLD / f"{kind}.avsc").read_text())
    new = load_schema(kind)
    client = SchemaRegistryClient(schema_registry.url)
    subject = subject_for(f"evolution.{kind}.{time.monotonic_ns()}")
    first = client.register(subject, canonical_schema(old))
    set_subject_compatibility(schema_registry, subject, "FULL")
    # Raises SchemaRegistryError if the registry finds it incompatible. (Ids are global
    # content ids: a schema another test registered already keeps its older id.)
    changed = canonical_schema(new) != canonical_schema(old)  # private kinds: unchanged
    assert (client.register(subject, canonical_schema(new)) != first) == changed
    with urllib.request.urlopen(f"{schema_registry.url}/subjects/{subject}/versions",
                                timeout=10) as response:
        assert len(json.loads(response.read())) == (2 if changed else 1)

    today = record_today(kind)
    old_names = {f["name"] for f in old["fields"]}
    added = [f for f in new["fields"] if f["name"] not in old_names]
    assert all("default" in f for f in added), kind
    # A record an ingestion job already has (written with 0.1.0), read with today's schema.
    written_then = {k: v for k, v in today.items() if k in old_names}
    now = read(write(old, written_then), old, new)
    for field in added:
        assert now[field["name"]] == field["default"], field["name"]
    # A record written today, read by a job still on 0.1.0.
    then = read(write(new, today), new, old)
    assert set(then) == old_names
    assert then["symbol" if "symbol" in then else "event_type"] == today.get(
        "symbol", today.get("event_type"))
