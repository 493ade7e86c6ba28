"""Every spec sample maps to the expected values and survives
map → Avro encode → decode exactly.

The envelope is unwrapped here by hand (not with the client's frame decoder)
so a mistake in either shows up."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from connector import records
from connector.bybit.events import MarketData, PrivateData, Stamp
from connector.bybit.topics import LEGACY_STREAMS, TOPICS
from connector.records import MAPPERS, PRIVATE_KINDS, MappingError, load_schema, record_key

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STAMP = Stamp(wall_ms=1_700_000_000_123, mono_ns=1)


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def market(name: str, stream: str) -> MarketData:
    raw = sample(name)
    if stream == "v1":
        f = raw.get("f")
        return MarketData("v1", raw["topic"], raw["symbol"], raw.get("params", {}),
                          tuple(raw["data"]), f in (True, "True", "true"), raw.get("sendTime"),
                          STAMP, frame=raw)
    return MarketData("v2", raw["topic"], raw["params"]["symbol"], raw["params"],
                      (raw["data"],), None, None, STAMP, frame=raw)


def private(name: str) -> PrivateData:
    raw = sample(name)
    return PrivateData(tuple(raw if isinstance(raw, list) else [raw]), STAMP)


def roundtrip(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(load_schema(kind))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    decoded: dict[str, Any] = fastavro.schemaless_reader(buf, schema)  # type: ignore[call-arg,assignment]
    return decoded


def ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def check(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """Round-trip and compare: timestamps come back as datetimes, all else equal."""
    decoded = roundtrip(kind, record)
    for field in load_schema(kind)["fields"]:
        name = field["name"]
        got = decoded[name]
        if isinstance(got, datetime):
            assert got.tzinfo == UTC
            got = ms(got)
        assert got == record[name], name
    return decoded


MARKET_CASES = [
    ("v1_trade.json", "v1", "v1_trade", {
        "trade_id": "929681067596857345", "price": "34924.15", "quantity": "0.00027",
        "buyer_is_taker": True, "event_time": 1625562619577, "send_time": 1626249138535,
        "symbol": "BTCUSDT", "bybit_topic": "trade"}),
    ("v1_realtimes.json", "v1", "v1_realtimes", {
        "close": "21082.22", "high": "21426.99", "low": "20575", "change_ratio": "0.0190",
        "open": "20689.11", "quote_volume": "141768159.45007801", "volume": "6772.990042",
        "usd_index_price": "21092.15001144", "exchange_id": 301, "symbol_name": "BTCUSDT",
        "event_time": 1673852936684}),
    ("v1_realtimes_string_t.json", "v1", "v1_realtimes", {
        "event_time": 1565592599015, "usd_index_price": None, "change_ratio": "-0.0401",
        "close": "12750.63"}),
    ("v1_kline.json", "v1", "v1_kline", {
        "interval": "15m", "start_time": 1565595900000, "open": "11381.89", "high": "11437",
        "low": "11381.89", "close": "11436.14", "volume": "16.3306", "bybit_topic": "kline_15m",
        "event_time": 1626252389284}),
    ("v1_lt.json", "v1", "v1_lt", {
        "symbol": "BTC3LUSDTNAV", "nav": "8.36157024279442973500", "basket": "0.000741332244224795",
        "leverage": "3.448586744632192167", "loan": "-20.474030060817421380",
        "ti": "18969.901970158967556311", "n": "14.063000000262307568",
        "event_time": 1650272320201}),
    ("v1_depth.json", "v1", "v1_depth", {
        "version": "112801745_18", "is_snapshot": True, "exchange_id": 301, "update_count": 0,
        "event_time": 1565600357643}),
    ("v1_mergeddepth.json", "v1", "v1_merged_depth", {
        "symbol": "ETHUSDT", "dump_scale": 1, "version": "10544_1", "is_snapshot": True,
        "bybit_topic": "mergedDepth_1"}),
    ("v1_diffdepth_snapshot.json", "v1", "v1_diff_depth", {
        "is_snapshot": True, "version": "112801745_18"}),
    ("v2_depth.json", "v2", "v2_depth", {
        "version": "13850022_2", "event_time": 1582001376853, "is_snapshot": True}),
    ("v2_kline.json", "v2", "v2_kline", {
        "interval": "1m", "start_time": 1582001880000, "close": "9799.4", "event_time": None,
        "send_time": None, "bybit_topic": "kline_1m"}),
    ("v2_trade.json", "v2", "v2_trade", {
        "trade_id": "2290000000033122060", "buyer_is_taker": False, "trade_type": "0",
        "price": "17387.19", "quantity": "0.025"}),
    ("v2_bookticker.json", "v2", "v2_book_ticker", {
        "bid_price": "9797.79", "bid_quantity": "0.177976", "ask_price": "9799",
        "ask_quantity": "0.65", "event_time": 1582001830346}),
    ("v2_realtimes.json", "v2", "v2_realtimes", {
        "usd_index_price": "21103.14018642", "quote_volume": "141913713.70049255"}),
]


@pytest.mark.parametrize(("name", "stream", "kind", "expected"), MARKET_CASES,
                         ids=[c[0] for c in MARKET_CASES])
def test_market_sample(name: str, stream: str, kind: str, expected: dict[str, Any]) -> None:
    recs = MAPPERS[kind](market(name, stream))
    assert len(recs) == 1
    rec = recs[0]
    for key, value in expected.items():
        assert rec[key] == value, key
    assert rec["receive_time"] == STAMP.wall_ms and rec["stream"] == stream
    assert rec["extra"] is None
    check(kind, rec)


def test_book_levels_are_exact_and_ordered() -> None:
    rec = MAPPERS["v1_depth"](market("v1_depth.json", "v1"))[0]
    raw = sample("v1_depth.json")["data"][0]
    assert [[lv["price"], lv["quantity"]] for lv in rec["bids"]] == raw["b"]
    assert [[lv["price"], lv["quantity"]] for lv in rec["asks"]] == raw["a"]
    decoded = check("v1_depth", rec)
    assert decoded["asks"][5] == {"price": "11375.71", "quantity": "2"}


def test_diff_depth_delta_is_not_a_snapshot() -> None:
    data = market("v1_diffdepth_snapshot.json", "v1")
    delta = MarketData("v1", "diffDepth", "BTCUSDT", data.params, data.items, False, 1, STAMP)
    assert MAPPERS["v1_diff_depth"](delta)[0]["is_snapshot"] is False


def test_v1_list_of_n_items_gives_n_records() -> None:
    data = market("v1_trade.json", "v1")
    item = data.items[0]
    many = MarketData("v1", "trade", "BTCUSDT", {}, (item, {**item, "v": "2"}, {**item, "v": "3"}),
                      True, 5, STAMP)
    assert [r["trade_id"] for r in MAPPERS["v1_trade"](many)] == ["929681067596857345", "2", "3"]


PRIVATE_CASES = [
    ("private_execution_report.json", "private_execution_report", {
        "event_type": "executionReport", "event_time": 1661505745347, "symbol": "BITUSDT",
        "client_order_id": "1661505744705", "side": "BUY", "order_type": "MARKET_OF_QUOTE",
        "status": "CANCELED", "order_id": "1231193858535151104",
        "cumulative_quote_quantity": "19.995336", "cumulative_filled_quantity": "14.16",
        "is_limit_maker": True, "is_close": False, "commission_asset": "BIT",
        "order_creation_time": 1661505745176, "trade_id": "2120000000001252630",
        "liquidation_indicator": "NO_LIQ"}),
    ("private_outbound_account_info.json", "private_outbound_account_info", {
        "event_time": 1629969654753, "can_trade": True,
        "balances": [{"asset": "BTC", "free": "10000000097.1982823144", "locked": "0"}]}),
    ("private_ticket_info.json", "private_ticket_info", {
        "trade_id": "899062000267837441", "order_id": "899048013515737344", "is_maker": True,
        "trade_time": 1621912542314, "price": "61000.0", "quantity": "0.001639",
        "account_id": "10043", "opponent_account_id": "10024"}),
    ("private_stop_execution_report.json", "private_stop_execution_report", {
        "trigger_price": "23668.86", "executed_order_id": "1218825007084354305",
        "order_creation_time": 1660031263181, "update_time": 1660031832223, "trigger_time": "0",
        "status": "ORDER_CANCELED", "ti": "4add1fe84e577026", "si": "bc86964648a3c395"}),
]


@pytest.mark.parametrize(("name", "kind", "expected"), PRIVATE_CASES,
                         ids=[c[0] for c in PRIVATE_CASES])
def test_private_sample(name: str, kind: str, expected: dict[str, Any]) -> None:
    data = private(name)
    assert len(data.events) == 1
    event = data.events[0]
    assert PRIVATE_KINDS[event["e"]] == kind
    rec = MAPPERS[kind](event, data)
    for key, value in expected.items():
        assert rec[key] == value, key
    assert rec["extra"] is None
    check(kind, rec)
    assert record_key(kind, rec) in (b"BITUSDT", b"BTCUSDT", b"BTC")


def test_unknown_fields_land_in_extra() -> None:
    data = market("v1_trade.json", "v1")
    item = {**data.items[0], "zz": {"new": 1}, "y": "7"}
    rec = MAPPERS["v1_trade"](MarketData("v1", "trade", "BTCUSDT", {}, (item,), True, 1, STAMP))[0]
    assert rec["extra"] == {"zz": '{"new": 1}', "y": '"7"'}
    assert check("v1_trade", rec)["extra"] == rec["extra"]


@pytest.mark.parametrize(("item", "message"), [
    ({"t": 1, "p": "1", "q": "1", "m": True}, "v1_trade.trade_id: Bybit field 'v' is missing"),
    ({"v": "1", "t": "soon", "p": "1", "q": "1", "m": True},
     "v1_trade.event_time: Bybit field 't': expected an integer, got \"soon\""),
    ({"v": "1", "t": 1, "p": None, "q": "1", "m": True},
     "v1_trade.price: Bybit field 'p' is missing"),
    ({"v": "1", "t": 1, "p": "1", "q": "1", "m": "yes"},
     "v1_trade.buyer_is_taker: Bybit field 'm': expected a boolean, got \"yes\""),
    ("not an object", "v1_trade.(item): expected an object, got str"),
])
def test_malformed_items_raise_mapping_error(item: Any, message: str) -> None:
    data = MarketData("v1", "trade", "BTCUSDT", {}, (item,), True, 1, STAMP)
    with pytest.raises(MappingError) as info:
        MAPPERS["v1_trade"](data)
    assert str(info.value) == message


@pytest.mark.parametrize("levels", [
    [["1", "2", "3"]], [["1"]], ["12"], [{"p": "1", "q": "2"}], [["1", 2]], [[None, "2"]], "12",
])
def test_malformed_book_level(levels: Any) -> None:
    data = market("v1_depth.json", "v1")
    bad = {**data.items[0], "b": levels}
    with pytest.raises(MappingError, match="bids"):
        MAPPERS["v1_depth"](MarketData("v1", "depth", "BTCUSDT", {}, (bad,), True, 1, STAMP))


def test_every_topic_has_schema_and_mapper_and_documented_fields() -> None:
    assert set(MAPPERS) == {t.kind for t in TOPICS}
    for t in TOPICS:
        schema = load_schema(t.kind)
        fastavro.parse_schema(schema)
        assert schema["doc"]
        for field in schema["fields"]:
            assert field.get("doc"), f"{t.kind}.{field['name']} has no doc"
            assert field["name"] == field["name"].lower(), field["name"]
            if isinstance(field["type"], list) and "null" in field["type"]:
                assert "default" in field and field["default"] is None
        names = {f["name"] for f in schema["fields"]}
        assert {"stream", "bybit_topic", "receive_time", "extra"} <= names
        if t.book:  # legacy books carry Bybit's `v`; v5 books `u`/`seq` and the resync marker
            continuity = ({"version"} if t.stream in LEGACY_STREAMS
                          else {"update_id", "cross_seq", "resync_reason"})
            assert {"is_snapshot", "bids", "asks", *continuity} <= names
    assert records.schema_dir().name == "avro"


def test_trade_direction_is_documented_unambiguously() -> None:
    field = next(f for f in load_schema("v1_trade")["fields"] if f["name"] == "buyer_is_taker")
    assert "BUYER was the taker" in field["doc"] and field["aliases"] == ["m"]
