"""Frames the live Bybit exchange sent (``tests/samples/v5/real/``) map without loss.

Each frame goes through the connector's own path (v5 decoder → mapper → Avro
→ read back) and is then rebuilt from the record and its schema alone: every
key of the envelope, of each ``data`` element and of each nested row must come
back with Bybit's value, from a field of its own or from ``frame_extra`` /
``extra``. Public and private topics alike.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from connector.bybit.events import Stamp, V5Data
from connector.bybit.v5.frames import decode
from connector.records import MAPPERS, load_schema, record_key
from connector.serde.serializers import PlainAvroSerializer

REAL = Path(__file__).resolve().parents[1] / "samples" / "v5" / "real"
STAMP = Stamp(wall_ms=1_760_000_005_999, mono_ns=1)
KIND_OF_TOPIC = {"orderbook.1": "v5_orderbook", "execution.spot": "v5_execution",
                 "order.spot": "v5_order", "wallet": "v5_wallet",
                 "execution.fast": "v5_execution_fast"}
FILES = sorted(p.name for p in REAL.glob("*.json"))


def decoded(name: str) -> tuple[dict[str, Any], V5Data, str]:
    text = (REAL / name).read_text()
    raw = json.loads(text)
    stream = "v5" if raw["topic"].startswith("orderbook.") else "v5-private"
    data = decode(text, stream, STAMP)
    assert isinstance(data, V5Data), data
    return raw, data, KIND_OF_TOPIC[data.topic_id]


def ms(value: Any) -> Any:
    return round(value.timestamp() * 1000) if isinstance(value, datetime) else value


def read_back(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(load_schema(kind))
    value = PlainAvroSerializer(load_schema(kind))(record)
    out: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[call-arg,assignment]
        io.BytesIO(value), schema)
    assert all(v is None or v.tzinfo == UTC for v in out.values() if isinstance(v, datetime))
    return {k: ms(v) for k, v in out.items()}


def named(node: Any, out: dict[str, Any]) -> dict[str, Any]:
    """Every named record of a schema by its short name (later fields refer to them so)."""
    if isinstance(node, dict):
        if node.get("type") == "record":
            out[node["name"]] = node
        for value in node.values():
            named(value, out)
    elif isinstance(node, list):
        for value in node:
            named(value, out)
    return out


def rebuild_item(fields: list[dict[str, Any]], record: dict[str, Any],
                 types: dict[str, Any]) -> dict[str, Any]:
    """The Bybit element a record came from, from the schema's "bybit" attributes and extra."""
    item: dict[str, Any] = {}
    for field in fields:
        key, value = field.get("bybit"), record[field["name"]]
        if "bybit_repeat" in field:
            item[field["bybit_repeat"]] = value
        if key is None or value is None:
            continue
        avro_type = field["type"]
        if isinstance(avro_type, list):
            avro_type = next(t for t in avro_type if t != "null")
        if field.get("bybit_type") == "json":
            value = json.loads(value)
        elif field.get("bybit_type") == "string":
            value = str(value)
        elif isinstance(avro_type, dict) and avro_type["type"] == "array":
            items = avro_type["items"]
            sub = (types[items.rsplit(".", 1)[-1]] if isinstance(items, str) else items)["fields"]
            if any("bybit" in f for f in sub):
                value = [rebuild_item(sub, element, types) for element in value]
            else:
                value = [[level[f["name"]] for f in sub] for level in value]
        item[key] = value
    item.update((k, json.loads(v)) for k, v in (record.get("extra") or {}).items())
    return item


def rebuild_envelope(kind: str, record: dict[str, Any], data: V5Data) -> dict[str, Any]:
    """The frame minus ``data``, from the record's envelope fields and frame_extra."""
    envelope: dict[str, Any] = {"topic": record["bybit_topic"] + (
        f".{record['symbol']}" if data.stream == "v5" else "")}
    for field in load_schema(kind)["fields"]:
        if "bybit_frame" in field and record[field["name"]] is not None:
            envelope[field["bybit_frame"]] = record[field["name"]]
    envelope.update((k, json.loads(v)) for k, v in (record["frame_extra"] or {}).items())
    return envelope


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_every_kind_of_real_frame_is_here() -> None:
    kinds = {decoded(name)[2] for name in FILES}
    assert kinds == set(KIND_OF_TOPIC.values())
    assert {decoded(name)[1].stream for name in FILES} == {"v5", "v5-private"}


@pytest.mark.parametrize("name", FILES)
def test_real_frame_maps_without_loss(name: str) -> None:
    raw, data, kind = decoded(name)
    records = MAPPERS[kind](data)
    items = raw["data"] if isinstance(raw["data"], list) else [raw["data"]]
    assert len(records) == (1 if kind == "v5_orderbook" else len(items))
    fields, types = load_schema(kind)["fields"], named(load_schema(kind), {})
    for record, item in zip(records, items, strict=True):
        back = read_back(kind, record)
        assert back == record
        assert same_json(rebuild_item(fields, back, types), item)
        envelope = {k: v for k, v in raw.items() if k != "data"}
        assert same_json(rebuild_envelope(kind, back, data), envelope)
        assert record_key(kind, record)  # every record has a Kafka key


def test_book_with_an_empty_side_is_a_book_record() -> None:
    _, data, kind = decoded("orderbook_1_delta_empty_bids.json")
    (record,) = MAPPERS[kind](data)
    assert record["bids"] == [] and len(record["asks"]) == 2
    assert (record["update_id"], record["cross_seq"], record["is_snapshot"]) == (
        873489, 1253141792, False)


def test_wallet_rows_of_every_account_shape_land() -> None:
    unified = MAPPERS["v5_wallet"](decoded("wallet_unified.json")[1])
    classic = MAPPERS["v5_wallet"](decoded("wallet_classic_contract.json")[1])
    bare = MAPPERS["v5_wallet"](decoded("wallet_no_account_type.json")[1])
    assert [r["account_type"] for r in unified + classic + bare] == ["UNIFIED", "CONTRACT", None]
    assert [c["coin"] for c in unified[0]["coins"]] == ["USDC", "BTC", "USDT"]
    assert classic[0]["coins"][0]["locked"] is None  # classic rows carry no `locked`
    assert classic[0]["total_equity"] == ""
    assert bare[0]["total_perp_upl"] is None
    assert bare[0]["extra"] == {"totalPerpUpl": '"0"'}
    assert record_key("v5_wallet", bare[0]) == b"wallet"
    assert record_key("v5_wallet", unified[0]) == b"UNIFIED"


def test_execution_fast_envelope_id_without_rows_writes_nothing() -> None:
    _, data, kind = decoded("execution_fast_envelope_id.json")
    assert (data.msg_id, MAPPERS[kind](data)) == ("fast-1", [])
