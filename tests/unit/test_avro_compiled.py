"""The compiled Avro writer must write fastavro's bytes for every record of every schema.

Random records are generated from each schema in ``avro/`` (so a schema added
later is covered without touching this file) and written three ways: fastavro
with the published schema (the reference), the compiled writer alone, and the
serializers (compiled writer with its fallback).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.errors import SerializationError
from connector.records import load_schema, schema_dir
from connector.serde.compiled import compile_writer
from connector.serde.serializers import ConfluentSerializer, PlainAvroSerializer, _AvroBody

KINDS = sorted(p.stem for p in Path(schema_dir()).glob("*.avsc"))
# Schemas with a shape the compiler declines on purpose (they keep fastavro).
NOT_COMPILED = {"v5_wallet"}  # array of many-field records (coins): fastavro writes those

text = st.one_of(
    st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,12})?", fullmatch=True),  # Bybit's decimals
    st.sampled_from(["", "BTCUSDT", "trade", "v1"]),
    st.text(max_size=90),  # non-ASCII, multi-byte length prefixes
)
LONG = st.one_of(st.integers(-(2**63), 2**63 - 1),
                 st.integers(1_500_000_000_000, 1_900_000_000_000),  # epoch ms
                 st.integers(-20_000, 20_000))


def strategy(avro_type: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values fastavro accepts for ``avro_type`` (the plain kinds the mappers produce)."""
    if isinstance(avro_type, list):
        return st.one_of(*(strategy(t, named) for t in avro_type))
    if isinstance(avro_type, str):
        if avro_type in named:
            return strategy(named[avro_type], named)
        return {
            "null": st.none(), "string": text, "long": LONG, "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1), "double": st.floats(width=64),
            "float": st.floats(width=32), "bytes": st.binary(max_size=40),
        }[avro_type]
    kind = avro_type["type"]
    if kind == "record":
        full = avro_type["name"]
        named[full] = avro_type
        named[full.rsplit(".", 1)[-1]] = avro_type
        for prefix in ("com.bybit.spot.v1.", "com.bybit.spot.v2.", "com.bybit.spot.private.",
                       "com.bybit.spot.v5."):
            named.setdefault(prefix + full, avro_type)
        return st.fixed_dictionaries(
            {f["name"]: strategy(f["type"], named) for f in avro_type["fields"]})
    if kind == "array":
        return st.lists(strategy(avro_type["items"], named), max_size=30)
    if kind == "map":
        return st.dictionaries(text, strategy(avro_type["values"], named), max_size=5)
    if kind == "enum":
        return st.sampled_from(avro_type["symbols"])
    return strategy(kind, named)  # a primitive with a logicalType


def reference(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_every_bybit_schema_compiles() -> None:
    assert len(KINDS) >= 16
    for kind in KINDS:
        compiled = compile_writer(load_schema(kind), _AvroBody(load_schema(kind))._arrays)
        assert (compiled is None) == (kind in NOT_COMPILED), (
            f"{kind}: compiled={compiled is not None}; extend avro_compiled for its shape "
            "or list it in NOT_COMPILED (it then keeps fastavro)")


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_bytes_equal_fastavro_on_random_records(kind: str, data: st.DataObject) -> None:
    schema = load_schema(kind)
    record = data.draw(strategy(schema, {}))
    expected = reference(schema, record)
    assert PlainAvroSerializer(schema)(record) == expected
    assert ConfluentSerializer(schema, 7)(record) == b"\x00\x00\x00\x00\x07" + expected
    body = _AvroBody(schema)
    if body._compiled is not None:
        written = body._compiled(record)
        assert written == expected  # plain values never leave the fast path


FLAT = {"type": "record", "name": "Flat", "fields": [
    {"name": "s", "type": "string"}, {"name": "b", "type": "boolean"},
    {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
    {"name": "d", "type": "double"}, {"name": "f", "type": "float"},
    {"name": "y", "type": "bytes"},
    {"name": "ns", "type": ["null", "string"]}, {"name": "sn", "type": ["string", "null"]},
    {"name": "nl", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
    {"name": "ni", "type": ["null", "int"]}, {"name": "nb", "type": ["null", "boolean"]},
    {"name": "nd", "type": ["null", "double"]}, {"name": "ny", "type": ["null", "bytes"]},
    {"name": "m", "type": {"type": "map", "values": "string"}},
    {"name": "nm", "type": ["null", {"type": "map", "values": "string"}]},
    {"name": "bn", "type": ["boolean", "null"]},
    {"name": "mn", "type": [{"type": "map", "values": "string"}, "null"]},
]}


@settings(max_examples=400, deadline=None)
@given(record=strategy(FLAT, {}))
def test_every_compiled_shape_equals_fastavro(record: dict[str, Any]) -> None:
    writer = compile_writer(FLAT)
    assert writer is not None
    written = writer(record)
    assert written is not None  # plain values never leave the fast path
    assert written == reference(FLAT, record)


@pytest.mark.parametrize("avro_type", [
    ["null", "string", "long"], ["string", "long"], {"type": "array", "items": "string"},
    {"type": "map", "values": "long"}, {"type": "enum", "name": "E", "symbols": ["A"]},
    {"type": "fixed", "name": "X", "size": 2}, {"type": "long", "logicalType": "decimal", "x": 1},
])
def test_shapes_not_compiled_are_declined(avro_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "a", "type": avro_type}]}
    assert compile_writer(schema) is None
    assert compile_writer({"type": "enum", "name": "E", "symbols": ["A"]}) is None


TRADE = {"stream": "v1", "bybit_topic": "trade", "symbol": "BTCUSDT",
         "event_time": 1626249138999, "send_time": 1626249139001,
         "receive_time": 1626249139005, "trade_id": "2290000000012345678",
         "price": "33412.53", "quantity": "0.012345", "buyer_is_taker": True, "extra": None}


@pytest.mark.parametrize("change", [
    {"send_time": True},  # a bool is not a long to fastavro's union matching
    {"send_time": 2**63},  # out of range
    {"event_time": -(2**63) - 1},
    {"receive_time": 1.5},
    {"event_time": datetime(2021, 7, 14, tzinfo=UTC)},  # a conversion fastavro owns
    {"price": "9" * 5000},  # longer than the prefix table
    {"extra": {"k": 1}},
    {"extra": [("k", "v")]},
    {"buyer_is_taker": "yes"},
    {"symbol": b"BTCUSDT"},
    {"send_time": None, "extra": None, "trade_id": None},
])
def test_odd_values_leave_the_fast_path_and_behave_as_before(change: dict[str, Any]) -> None:
    schema = load_schema("v1_trade")
    record = {**TRADE, **change}
    body = _AvroBody(schema)
    assert body._compiled is not None and body._compiled(record) is None
    out = io.BytesIO()
    try:
        body.write(out, record)
    except SerializationError:
        with pytest.raises(SerializationError):
            PlainAvroSerializer(schema)(record)
    else:
        assert PlainAvroSerializer(schema)(record) == out.getvalue()


def test_missing_field_takes_fastavro_and_its_default() -> None:
    schema = load_schema("v1_trade")
    record = {k: v for k, v in TRADE.items() if k not in ("send_time", "extra")}
    assert PlainAvroSerializer(schema)(record) == reference(schema, {**record, "send_time": None,
                                                                     "extra": None})
    with pytest.raises(SerializationError, match="Trade"):
        PlainAvroSerializer(schema)({k: v for k, v in TRADE.items() if k != "price"})


# -- repeated fields: bytes cached per value object -------------------------------------

REPEATED_FLAT = frozenset(f["name"] for f in FLAT["fields"])  # every field, maps included


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.tuples(strategy(FLAT, {}), st.lists(strategy(FLAT, {}), min_size=1,
                                                                 max_size=4)),
                       min_size=1, max_size=4),
       share=st.sets(st.sampled_from(sorted(REPEATED_FLAT))))
def test_repeated_fields_write_fastavro_bytes_for_every_record(
        frames: list[tuple[dict[str, Any], list[dict[str, Any]]]], share: set[str]) -> None:
    """Records that share some values as the very same objects (as a frame's
    records do), then records with other objects: each one's bytes are fastavro's."""
    writer = compile_writer(FLAT, repeated=REPEATED_FLAT)
    assert writer is not None
    for base, items in frames:
        for item in items:
            record = {**item, **{k: base[k] for k in share}}  # the same objects as `base`
            assert writer(record) == reference(FLAT, record)


def test_a_map_changed_in_place_is_written_anew() -> None:
    """Only immutable values are cached: a dict keeps its identity when changed."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "m", "type": ["null", {"type": "map", "values": "string"}]},
        {"name": "s", "type": "string"}]}
    writer = compile_writer(schema, repeated=frozenset({"m", "s"}))
    assert writer is not None
    shared: dict[str, str] = {"a": "1"}
    first = writer({"m": shared, "s": "x"})
    shared["b"] = "2"
    second = writer({"m": shared, "s": "x"})
    assert first == reference(schema, {"m": {"a": "1"}, "s": "x"})
    assert second == reference(schema, {"m": {"a": "1", "b": "2"}, "s": "x"})


def test_an_equal_value_in_another_object_is_written_from_its_own_value() -> None:
    """The cache is keyed by identity; an equal-but-distinct value, or a value
    that failed the fast path, never reuses or poisons it."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "t", "type": "long"}, {"name": "s", "type": ["null", "string"]}]}
    writer = compile_writer(schema, repeated=frozenset({"t", "s"}))
    assert writer is not None
    big = 1_700_000_000_000
    assert writer({"t": big, "s": "é"}) == reference(schema, {"t": big, "s": "é"})
    assert writer({"t": big + 1, "s": "é"}) == reference(schema, {"t": big + 1, "s": "é"})
    assert writer({"t": 2**64, "s": "x"}) is None  # out of range: fastavro decides
    assert writer({"t": big, "s": 5}) is None  # wrong type: fastavro decides
    assert writer({"t": big, "s": None}) == reference(schema, {"t": big, "s": None})


def test_threads_sharing_a_writer_never_mix_cached_bytes() -> None:
    """Two connection threads write records of different frames with one
    serializer at once: every record's bytes are its own."""
    import threading

    schema = load_schema("v1_trade")
    from connector.records import repeated_fields

    serializer = PlainAvroSerializer(schema, repeated_fields("v1_trade"))
    failures: list[str] = []

    def run(prefix: str) -> None:
        for n in range(3000):
            base = {"stream": "v1", "bybit_topic": "trade", "symbol": f"{prefix}{n % 7}USDT",
                    "send_time": 1_700_000_000_000 + n, "receive_time": 1_700_000_000_100 + n,
                    "first_message": n % 2 == 0, "frame_symbol_name": f"{prefix}{n}",
                    "binary": None, "frame_extra": None}
            for k in range(3):
                record = {**base, "event_time": 1_700_000_000_000 + k, "trade_id": f"{n}-{k}",
                          "price": "1.5", "quantity": "2", "buyer_is_taker": bool(k % 2),
                          "extra": None, "item_symbol": base["symbol"]}
                if serializer(record) != reference(schema, record):
                    failures.append(f"{prefix} {n} {k}")

    threads = [threading.Thread(target=run, args=(p,)) for p in ("AAA", "BBBBB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
