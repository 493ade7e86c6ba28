"""Today's v5 schemas are a BACKWARD-compatible evolution of the first v5 schemas.

The first v5 schemas (``tests/samples/avro-v5-first/``, never part of a
release: 0.1.0 shipped the legacy kinds only) required every field Bybit
documents as always sent. Today only what identifies a record is required and
every envelope field lands in the new ``frame_extra``. Checked in a real
registry: today's schema is accepted as the next version under BACKWARD; a
record written with the first schema reads with today's (new fields take
their defaults); and a record written today with every field present reads
with the first schema. Under FULL the registry refuses the change (a reader
of the first schema cannot read a null where it requires a value), which is
why the README asks for BACKWARD on v5 subjects registered before.
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

from connector.bybit.events import Stamp, V5Data
from connector.bybit.v5.frames import decode
from connector.dev.schema_registry import SchemaRegistry
from connector.errors import SchemaRegistryError
from connector.records import MAPPERS, load_schema
from connector.serde.registry import SchemaRegistryClient, subject_for
from connector.serde.serializers import canonical_schema

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
FIRST = SAMPLES / "avro-v5-first"
KINDS = sorted(p.stem for p in FIRST.glob("*.avsc"))
SAMPLE_OF = {"v5_orderbook": "orderbook_200_snapshot.json",
             "v5_orderbook_rpi": "orderbook_rpi_delta.json",
             "v5_public_trade": "publicTrade_spot.json", "v5_tickers": "tickers_spot.json",
             "v5_kline": "kline_spot_confirmed.json", "v5_order": "order_spot.json",
             "v5_execution": "execution_spot.json",
             "v5_execution_fast": "execution_fast_spot.json", "v5_wallet": "wallet.json"}
PRICE_LIMIT = ('{"topic":"priceLimit.BTCUSDT","ts":1760000005300,"data":{"symbol":"BTCUSDT",'
               '"buyLmt":"124397.58","sellLmt":"119519.24"}}')


def record_today(kind: str) -> dict[str, Any]:
    text = PRICE_LIMIT if kind == "v5_price_limit" else (
        SAMPLES / "v5" / SAMPLE_OF[kind]).read_text()
    private = kind in ("v5_order", "v5_execution", "v5_execution_fast", "v5_wallet")
    data = decode(text, "v5-private" if private else "v5", Stamp(1_760_000_005_999, 1))
    assert isinstance(data, V5Data)
    records: list[dict[str, Any]] = MAPPERS[kind](data)
    return records[0]


def write(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def read(data: bytes, writer: dict[str, Any], reader: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment,call-arg]
        io.BytesIO(data), fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    return result


def set_compatibility(registry: SchemaRegistry, subject: str, level: str) -> None:
    request = urllib.request.Request(
        f"{registry.url}/config/{subject}", method="PUT",
        data=json.dumps({"compatibility": level}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_every_v5_kind_has_a_first_schema() -> None:
    assert sorted(p.stem for p in FIRST.glob("*.avsc")) == sorted([*SAMPLE_OF, "v5_price_limit"])


@pytest.mark.parametrize("kind", KINDS)
def test_today_is_a_backward_compatible_evolution_of_the_first_v5_schema(
        kind: str, schema_registry: SchemaRegistry) -> None:
    first = json.loads((FIRST / f"{kind}.avsc").read_text())
    today = load_schema(kind)
    client = SchemaRegistryClient(schema_registry.url)

    full = subject_for(f"evolution.v5.full.{kind}.{time.monotonic_ns()}")
    client.register(full, canonical_schema(first))
    set_compatibility(schema_registry, full, "FULL")
    with pytest.raises(SchemaRegistryError, match="incompatible"):
        client.register(full, canonical_schema(today))

    subject = subject_for(f"evolution.v5.{kind}.{time.monotonic_ns()}")
    first_id = client.register(subject, canonical_schema(first))
    set_compatibility(schema_registry, subject, "BACKWARD")
    assert client.register(subject, canonical_schema(today)) != first_id
    with urllib.request.urlopen(f"{schema_registry.url}/subjects/{subject}/versions",
                                timeout=10) as response:
        assert len(json.loads(response.read())) == 2

    record = record_today(kind)
    first_names = {f["name"] for f in first["fields"]}
    added = [f for f in today["fields"] if f["name"] not in first_names]
    assert [f["name"] for f in added] == ["frame_extra"]
    # A record written with the first schema, read with today's.
    then = {k: v for k, v in record.items() if k in first_names}
    now = read(write(first, then), first, today)
    assert now["frame_extra"] is None
    # A record written today with every field present, read with the first schema.
    old = read(write(today, record), today, first)
    assert set(old) == first_names
    assert old["bybit_topic"] == record["bybit_topic"]
