"""No field of a v5 frame is dropped, and one missing field never loses a frame.

* an envelope key no field names lands in ``frame_extra`` (item keys in ``extra``);
* only what identifies a record is required; any other field Bybit leaves out
  is null, and where Bybit documents it as always sent the absence is counted
  in ``record_fields_missing_total{topic_kind, field}``, whose labels come from
  the schema only;
* a respelled field is both: null under its schema name (counted) and kept in
  ``extra`` under Bybit's spelling.

Frames go through the connector's own v5 decoder, as on the wire.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from prometheus_client import REGISTRY

from connector.bybit.events import Stamp, V5Data
from connector.bybit.v5.frames import decode
from connector.records import MAPPERS, MappingError, expected_paths, load_schema, record_key
from connector.serde.serializers import PlainAvroSerializer

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"
STAMP = Stamp(wall_ms=1_760_000_005_999, mono_ns=1)
METRIC = "bybit_connector_record_fields_missing_total"
PRICE_LIMIT = {"topic": "priceLimit.BTCUSDT", "ts": 1760000005300,
               "data": {"symbol": "BTCUSDT", "buyLmt": "124397.58", "sellLmt": "119519.24"}}
SAMPLE_OF = {"v5_orderbook": "orderbook_50_delta.json",
             "v5_orderbook_rpi": "orderbook_rpi_delta.json",
             "v5_public_trade": "publicTrade_spot.json", "v5_tickers": "tickers_spot.json",
             "v5_kline": "kline_spot.json", "v5_order": "order_spot.json",
             "v5_execution": "execution_spot.json", "v5_execution_fast": "execution_fast_spot.json",
             "v5_wallet": "wallet.json", "v5_price_limit": PRICE_LIMIT}
KINDS = sorted(SAMPLE_OF)
# Bybit fields a record cannot be written without: symbol, the ids that key and
# de-duplicate it, a book's update ids and levels, a candle's start and interval.
IDENTITY = {"v5_execution": {"symbol", "order_id", "exec_id"},
            "v5_execution_fast": {"symbol", "order_id", "exec_id"},
            "v5_kline": {"start_time", "interval"}, "v5_order": {"symbol", "order_id"},
            "v5_orderbook": {"update_id", "cross_seq", "bids", "asks"},
            "v5_orderbook_rpi": {"update_id", "cross_seq", "bids", "asks"},
            "v5_price_limit": set(), "v5_public_trade": {"trade_id"}, "v5_tickers": set(),
            "v5_wallet": {"coins.coin"}}


def raw_of(kind: str) -> dict[str, Any]:
    source = SAMPLE_OF[kind]
    if isinstance(source, dict):
        return copy.deepcopy(source)
    raw: dict[str, Any] = json.loads((SAMPLES / source).read_text())
    return raw


def mapped(kind: str, raw: dict[str, Any]) -> list[dict[str, Any]]:
    private = kind in ("v5_order", "v5_execution", "v5_execution_fast", "v5_wallet")
    stream = "v5-private" if private else "v5"
    data = decode(json.dumps(raw), stream, STAMP)
    assert isinstance(data, V5Data), data
    records: list[dict[str, Any]] = MAPPERS[kind](data)
    return records


def written(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record as a consumer reads it back from its Avro bytes."""
    value = PlainAvroSerializer(load_schema(kind))(record)
    out: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[call-arg,assignment]
        io.BytesIO(value), fastavro.parse_schema(load_schema(kind)))
    return out


def missing_count(kind: str, path: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"topic_kind": kind, "field": path}) or 0.0


def items_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    data = raw["data"]
    return data if isinstance(data, list) else [data]


def bybit_key(kind: str, path: str) -> tuple[str | None, str]:
    """(parent field or None, Bybit key) of a schema path such as ``coins.usd_value``."""
    fields = load_schema(kind)["fields"]
    parent, _, name = path.rpartition(".")
    if parent:
        outer = next(f for f in fields if f["name"] == parent)
        branch = next(t for t in outer["type"] if t != "null")
        fields = branch["items"]["fields"]
    field = next(f for f in fields if f["name"] == name)
    key = field.get("bybit") or field.get("bybit_frame")
    assert key is not None, path
    if parent:
        return next(f["bybit"] for f in load_schema(kind)["fields"] if f["name"] == parent), key
    return ("" if "bybit_frame" in field else None), key


# -- part 2: nothing on the envelope is dropped ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_envelope_keys_no_field_names_land_in_frame_extra(kind: str) -> None:
    raw = raw_of(kind)
    raw["xFutureField"] = "env"
    raw["nested"] = {"a": [1, "2"]}
    records = mapped(kind, raw)
    assert records
    for record in records:
        assert record["frame_extra"] == {"xFutureField": '"env"', "nested": '{"a": [1, "2"]}'}
        assert record["extra"] is None  # item fields and envelope fields never mix
        assert written(kind, record)["frame_extra"] == record["frame_extra"]
    clean = mapped(kind, raw_of(kind))
    assert all(r["frame_extra"] is None for r in clean)


def test_same_name_on_envelope_and_item_keeps_both_apart() -> None:
    raw = raw_of("v5_tickers")
    raw["xFutureField"] = "env"
    raw["data"]["xFutureField"] = "item"
    (record,) = mapped("v5_tickers", raw)
    assert record["frame_extra"] == {"xFutureField": '"env"'}
    assert record["extra"] == {"xFutureField": '"item"'}


def test_envelope_value_the_decoder_cannot_take_is_kept() -> None:
    raw = raw_of("v5_execution_fast")
    raw["id"] = 4  # Bybit's `id` is a string; a number is not dropped silently
    before = missing_count("v5_execution_fast", "event_time")
    (record,) = mapped("v5_execution_fast", raw)
    assert record["message_id"] is None
    assert record["frame_extra"] == {"id": "4"}
    assert missing_count("v5_execution_fast", "event_time") == before


def test_execution_fast_envelope_id_is_the_message_id() -> None:
    raw = raw_of("v5_execution_fast")
    raw["id"] = "fast-1"
    (record,) = mapped("v5_execution_fast", raw)
    assert (record["message_id"], record["frame_extra"]) == ("fast-1", None)


def test_marker_has_no_frame_extra() -> None:
    raw = raw_of("v5_orderbook")
    raw["xFutureField"] = 1
    from connector.records import resync_marker

    stream_data = decode(json.dumps(raw), "v5", STAMP)
    assert isinstance(stream_data, V5Data)
    assert resync_marker("v5_orderbook", stream_data, "gap")["frame_extra"] is None


# -- part 3: one missing field never loses a frame ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_only_identity_fields_are_required(kind: str) -> None:
    required = set()
    for field in load_schema(kind)["fields"]:
        types = field["type"] if isinstance(field["type"], list) else [field["type"]]
        if ("bybit" in field or "bybit_frame" in field) and "null" not in types:
            required.add(field["name"])
        for branch in types:
            items = branch.get("items") if isinstance(branch, dict) else None
            if isinstance(items, dict) and any("bybit" in f for f in items["fields"]):
                required |= {f"{field['name']}.{f['name']}" for f in items["fields"]
                             if "bybit" in f and not isinstance(f["type"], list)}
    assert required == IDENTITY[kind]


CASES = [(kind, path) for kind in KINDS for path in expected_paths(kind)]


@pytest.mark.parametrize(("kind", "path"), CASES, ids=[f"{k}:{p}" for k, p in CASES])
def test_a_missing_expected_field_is_null_and_counted(kind: str, path: str) -> None:
    raw = raw_of(kind)
    parent, key = bybit_key(kind, path)
    if parent == "":  # envelope
        assert raw.pop(key, None) is not None, path
        removed = 1
    else:
        rows = items_of(raw) if parent is None else [
            row for item in items_of(raw) for row in item[parent]]
        removed = sum(row.pop(key, None) is not None for row in rows)
        assert removed, path
    before = missing_count(kind, path)
    records = mapped(kind, raw)
    assert records, "the frame still lands"
    head, _, name = path.rpartition(".")
    for record in records:
        values = [row[name] for row in record[head]] if head else [record[name]]
        assert all(v is None for v in values), path
        assert record["extra"] is None and record["frame_extra"] is None
        written(kind, record)  # and it serializes
    # counted once per frame for an envelope field, once per element or row otherwise
    assert missing_count(kind, path) - before == removed


def test_a_missing_identity_field_still_dead_letters() -> None:
    raw = raw_of("v5_execution")
    del items_of(raw)[0]["execId"]
    with pytest.raises(MappingError, match="exec_id: Bybit field 'execId' is missing"):
        mapped("v5_execution", raw)


def test_a_respelled_field_lands_in_extra_and_is_counted() -> None:
    raw = raw_of("v5_wallet")
    row = items_of(raw)[0]
    row["totalPerpUpl"] = row.pop("totalPerpUPL")
    coin = row["coin"][0]
    coin["usd_value"] = coin.pop("usdValue")
    before = (missing_count("v5_wallet", "total_perp_upl"),
              missing_count("v5_wallet", "coins.usd_value"))
    (record,) = mapped("v5_wallet", raw)
    assert record["total_perp_upl"] is None
    assert record["extra"] == {"totalPerpUpl": json.dumps(row["totalPerpUpl"])}
    assert record["coins"][0]["usd_value"] is None
    assert record["coins"][0]["extra"] == {"usd_value": json.dumps(coin["usd_value"])}
    after = (missing_count("v5_wallet", "total_perp_upl"),
             missing_count("v5_wallet", "coins.usd_value"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_wallet_without_account_type_is_keyed_by_its_topic() -> None:
    raw = raw_of("v5_wallet")
    del items_of(raw)[0]["accountType"]
    (record,) = mapped("v5_wallet", raw)
    assert record["account_type"] is None
    assert record_key("v5_wallet", record) == b"wallet"


def test_missing_field_labels_come_from_the_schema_only() -> None:
    # Frames full of unknown keys and without any optional field: every series of
    # the metric still names a schema path, so the label set stays bounded.
    for kind in KINDS:
        raw = raw_of(kind)
        for item in items_of(raw):
            for key in [k for k in item if k not in ("i", "execId", "orderId", "symbol", "s",
                                                     "u", "seq", "b", "a", "start",
                                                     "interval", "coin")]:
                item[f"x{key}"] = item.pop(key)
        mapped(kind, raw)
    allowed = {(kind, path) for kind in KINDS for path in expected_paths(kind)}
    seen = {(s.labels["topic_kind"], s.labels["field"])
            for metric in REGISTRY.collect() if metric.name == METRIC.removesuffix("_total")
            for s in metric.samples if s.name == METRIC}
    assert seen and seen <= allowed
    assert seen == allowed  # every child exists from the start: dashboards show zeros
