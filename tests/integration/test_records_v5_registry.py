"""Every v5 schema is accepted by a real Confluent-compatible registry, and
records of every v5 sample read back through confluent-kafka's own
deserializer (resolved from the registry by schema id) equal what the mapper
produced."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistry
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.bybit.events import Stamp, V5Data
from connector.dev.schema_registry import SchemaRegistry
from connector.records import MAPPERS, load_schema, resync_marker
from connector.serde.registry import SchemaRegistryClient, subject_for
from connector.serde.serializers import ConfluentSerializer, canonical_schema

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"
CASES = {
    "v5_orderbook": "orderbook_200_snapshot.json",
    "v5_orderbook_rpi": "orderbook_rpi_delta.json",
    "v5_public_trade": "publicTrade_spot.json",
    "v5_tickers": "tickers_spot.json",
    "v5_kline": "kline_spot_confirmed.json",
    "v5_order": "order_spot.json",
    "v5_execution": "execution_spot.json",
    "v5_execution_fast": "execution_fast_spot.json",
    "v5_wallet": "wallet.json",
}
PRICE_LIMIT = {"topic": "priceLimit.BTCUSDT", "ts": 1760000005300,
               "data": {"symbol": "BTCUSDT", "buyLmt": "124397.58", "sellLmt": "119519.24"}}


def frame(raw: dict[str, Any]) -> V5Data:
    topic = raw["topic"]
    private = "creationTime" in raw
    topic_id, symbol = (topic, "") if private else topic.rsplit(".", 1)
    data = raw["data"]
    return V5Data("v5-private" if private else "v5", topic, topic_id, symbol, raw.get("type"),
                  raw.get("ts"), raw.get("cts"), raw.get("cs"), raw.get("id"),
                  raw.get("creationTime"), tuple(data) if isinstance(data, list) else (data,),
                  Stamp(1_760_000_005_999, 1))


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_v5_schemas_register_and_read_back_through_confluent(
        schema_registry: SchemaRegistry) -> None:
    client = SchemaRegistryClient(schema_registry.url)
    deserialize = AvroDeserializer(ConfluentRegistry({"url": schema_registry.url}))
    prefix = f"v5rec{time.monotonic_ns()}"
    frames = {kind: frame(json.loads((SAMPLES / name).read_text()))
              for kind, name in CASES.items()}
    frames["v5_price_limit"] = frame(PRICE_LIMIT)
    for kind, data in frames.items():
        topic = f"{prefix}.{kind}"
        schema_id = client.register(subject_for(topic), canonical_schema(load_schema(kind)))
        serialize = ConfluentSerializer(load_schema(kind), schema_id)
        records = MAPPERS[kind](data)
        if kind in ("v5_orderbook", "v5_orderbook_rpi"):
            records.append(resync_marker(kind, data, "gap"))
        assert records
        for record in records:
            got = deserialize(serialize(record), SerializationContext(topic, MessageField.VALUE))
            assert plain(got) == record, kind
