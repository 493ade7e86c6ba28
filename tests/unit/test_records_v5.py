"""Every Bybit v5 data sample survives decode → map → Avro → read back, and
inverts to exactly what Bybit sent.

The frame is unwrapped here by hand into a ``V5Data`` (not with the client's
decoder) so a mistake in either shows up. The inversion reads only the schema:
``"bybit"`` (key in a data element), ``"bybit_frame"`` (key in the envelope),
``"bybit_repeat"`` (the element's copy of the topic's symbol) and
``"bybit_type"`` (Bybit's JSON type where the Avro type differs).
"""

from __future__ import annotations

import copy
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.bybit.events import Stamp, V5Data
from connector.bybit.topics import TOPICS, V5_STREAMS
from connector.errors import SerializationError
from connector.records import MAPPERS, MappingError, load_schema, record_key, resync_marker
from connector.records.mapping import field_plan, map_item, row_mapper
from connector.serde.serializers import PlainAvroSerializer

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"
STAMP = Stamp(wall_ms=1_760_000_005_999, mono_ns=1)
V5_KINDS = sorted({t.kind for t in TOPICS if t.stream in V5_STREAMS})
BOOK_KINDS = ("v5_orderbook", "v5_orderbook_rpi")
ONE_PER_FRAME = (*BOOK_KINDS, "v5_tickers", "v5_price_limit")

# priceLimit has no sample file: the frame as Bybit documents it (no `type`).
PRICE_LIMIT = {"topic": "priceLimit.BTCUSDT", "ts": 1760000005300,
               "data": {"symbol": "BTCUSDT", "buyLmt": "124397.58", "sellLmt": "119519.24"}}


def sample(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return raw


def frame(raw: dict[str, Any]) -> V5Data:
    """What the v5 decoder hands the mappers, unwrapped by hand."""
    topic = raw["topic"]
    private = "creationTime" in raw
    topic_id, symbol = (topic, "") if private else topic.rsplit(".", 1)
    data = raw["data"]
    return V5Data("v5-private" if private else "v5", topic, topic_id, symbol, raw.get("type"),
                  raw.get("ts"), raw.get("cts"), raw.get("cs"), raw.get("id"),
                  raw.get("creationTime"), tuple(data) if isinstance(data, list) else (data,),
                  STAMP, raw=json.dumps(raw))


def read_back(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """Serialize with the connector's serializer, read with fastavro and the published schema."""
    value = PlainAvroSerializer(load_schema(kind))(record)
    decoded: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[call-arg,assignment]
        io.BytesIO(value), fastavro.parse_schema(load_schema(kind)))
    return decoded


def ms(value: Any) -> Any:
    if isinstance(value, datetime):
        assert value.tzinfo == UTC
        return round(value.timestamp() * 1000)
    return value


def named_records(node: Any, out: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "record":
            out[node["name"]] = node
        for value in node.values():
            named_records(value, out)
    elif isinstance(node, list):
        for value in node:
            named_records(value, out)
    return out


def invert(fields: list[dict[str, Any]], record: dict[str, Any],
           named: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Bybit data element a decoded record came from, rebuilt from the schema alone."""
    item: dict[str, Any] = {}
    for field in fields:
        value = record[field["name"]]
        if "bybit_repeat" in field:
            item[field["bybit_repeat"]] = value
        key = field.get("bybit")
        if key is None or value is None:  # absent and null both map to null
            continue
        avro_type = field["type"]
        if isinstance(avro_type, list):
            avro_type = next(t for t in avro_type if t != "null")
        value = ms(value)
        if field.get("bybit_type") == "json":
            value = json.loads(value)
        elif field.get("bybit_type") == "string":
            value = str(value)
        elif isinstance(avro_type, dict) and avro_type["type"] == "array":
            items = avro_type["items"]
            sub = named[items.rsplit(".", 1)[-1]] if isinstance(items, str) else items
            if any("bybit" in f for f in sub["fields"]):
                value = [invert(sub["fields"], element, named) for element in value]
            else:  # positional levels
                value = [[level[f["name"]] for f in sub["fields"]] for level in value]
        item[key] = value
    for key, text in (record.get("extra") or {}).items():
        item[key] = json.loads(text)
    return item


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON (so true is not 1 and "1" is not 1)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


CASES = [
    ("orderbook_1_snapshot.json", "v5_orderbook"),
    ("orderbook_1_snapshot_resend_unchanged.json", "v5_orderbook"),
    ("orderbook_50_snapshot.json", "v5_orderbook"),
    ("orderbook_50_delta.json", "v5_orderbook"),
    ("orderbook_50_snapshot_u1_restart.json", "v5_orderbook"),
    ("orderbook_200_snapshot.json", "v5_orderbook"),
    ("orderbook_200_delta.json", "v5_orderbook"),
    ("orderbook_1000_snapshot.json", "v5_orderbook"),
    ("orderbook_1000_delta.json", "v5_orderbook"),
    ("orderbook_rpi_delta.json", "v5_orderbook_rpi"),
    ("publicTrade_spot.json", "v5_public_trade"),
    ("tickers_spot.json", "v5_tickers"),
    ("kline_spot.json", "v5_kline"),
    ("kline_spot_confirmed.json", "v5_kline"),
    ("order_spot.json", "v5_order"),
    ("execution_spot.json", "v5_execution"),
    ("execution_fast_spot.json", "v5_execution_fast"),
    ("wallet.json", "v5_wallet"),
    (PRICE_LIMIT, "v5_price_limit"),
]


def case_raw(source: str | dict[str, Any]) -> dict[str, Any]:
    return sample(source) if isinstance(source, str) else copy.deepcopy(source)


@pytest.mark.parametrize(("source", "kind"), CASES,
                         ids=[c[0] if isinstance(c[0], str) else "priceLimit" for c in CASES])
def test_sample_maps_serializes_and_inverts_exactly(source: str | dict[str, Any],
                                                    kind: str) -> None:
    raw = case_raw(source)
    data = frame(raw)
    records = MAPPERS[kind](data)
    items = raw["data"] if isinstance(raw["data"], list) else [raw["data"]]
    assert len(records) == (1 if kind in ONE_PER_FRAME else len(items))
    schema = load_schema(kind)
    named = named_records(schema, {})
    for record, item in zip(records, items, strict=True):
        assert set(record) == {f["name"] for f in schema["fields"]}
        assert record["extra"] is None, "every key of the sample is known by the schema"
        decoded = read_back(kind, record)
        assert {k: ms(v) for k, v in decoded.items()} == record
        # the data element, exactly
        rebuilt = invert(schema["fields"], decoded, named)
        assert rebuilt == item and same_json(rebuilt, item)
        # the envelope and the connector's own fields
        for field in schema["fields"]:
            if "bybit_frame" in field:
                assert ms(decoded[field["name"]]) == raw.get(field["bybit_frame"]), field["name"]
        assert decoded["stream"] == data.stream
        assert decoded["bybit_topic"] == data.topic_id
        assert ms(decoded["receive_time"]) == STAMP.wall_ms
        if data.stream == "v5":
            assert decoded["symbol"] == "BTCUSDT"
        if kind in BOOK_KINDS:
            assert decoded["is_snapshot"] is (raw["type"] == "snapshot")
            assert decoded["resync_reason"] is None
            assert decoded["depth"] == (50 if kind == "v5_orderbook_rpi"
                                        else int(data.topic_id.split(".")[1]))


def one(kind: str, source: str | dict[str, Any]) -> dict[str, Any]:
    records = MAPPERS[kind](frame(case_raw(source)))
    assert len(records) == 1
    return records[0]


def test_book_values() -> None:
    snap = one("v5_orderbook", "orderbook_50_snapshot.json")
    assert (snap["is_snapshot"], snap["update_id"], snap["cross_seq"], snap["depth"]) == (
        True, 28750112, 81234567890, 50)
    assert snap["matching_engine_time"] == 1760000005120 and snap["frame_type"] == "snapshot"
    assert len(snap["bids"]) == len(snap["asks"]) == 50
    delta = one("v5_orderbook", "orderbook_1000_delta.json")
    assert delta["is_snapshot"] is False and delta["asks"] == [] and delta["depth"] == 1000
    assert one("v5_orderbook", "orderbook_50_snapshot_u1_restart.json")["update_id"] == 1
    first = one("v5_orderbook", "orderbook_1_snapshot.json")
    resend = one("v5_orderbook", "orderbook_1_snapshot_resend_unchanged.json")
    assert resend["update_id"] == first["update_id"] and resend["is_snapshot"] is True
    assert resend["event_time"] > first["event_time"]


def test_rpi_levels_keep_both_sizes() -> None:
    rec = one("v5_orderbook_rpi", "orderbook_rpi_delta.json")
    assert rec["bids"][2] == {"price": "121958.31", "quantity": "0", "rpi_quantity": "0.163986"}
    assert rec["asks"][0] == {"price": "121958.41", "quantity": "1.028814",
                              "rpi_quantity": "0.788210"}
    assert read_back("v5_orderbook_rpi", rec)["bids"] == rec["bids"]


def test_trade_values() -> None:
    recs = MAPPERS["v5_public_trade"](frame(sample("publicTrade_spot.json")))
    assert [r["trade_id"] for r in recs] == ["2290000000912345671", "2290000000912345672",
                                             "2290000000912345673"]
    last = recs[2]
    assert (last["taker_side"], last["price"], last["quantity"], last["trade_time"],
            last["is_block_trade"], last["is_rpi"], last["cross_seq"]) == (
        "Sell", "121958.40", "0.250000", 1760000005127, False, False, 81234567905)
    assert last["event_time"] == 1760000005128 and last["bybit_topic"] == "publicTrade"


def test_private_values() -> None:
    order = one("v5_order", "order_spot.json")
    assert order["created_time"] == 1760000005122 and order["updated_time"] == 1760000005125
    assert order["cum_fee_detail"] == {"BTC": "0.000006"} and order["symbol"] == "BTCUSDT"
    assert order["message_id"] == "100401071-20000-81234567902"
    assert order["event_time"] == 1760000005132 and order["bybit_topic"] == "order.spot"
    assert order["create_type"] is None and order["tpsl_mode"] is None  # not sent for spot
    assert order["avg_price"] == "121958.41316667" and order["broker_order_price"] == ""
    fills = MAPPERS["v5_execution"](frame(sample("execution_spot.json")))
    assert [f["exec_id"] for f in fills] == ["2100000000433129841", "2100000000433129842"]
    assert fills[0]["extra_fees"] == '""' and fills[0]["closed_size"] == ""
    assert fills[0]["exec_time"] == 1760000005125 and fills[0]["is_maker"] is False
    fast = one("v5_execution_fast", "execution_fast_spot.json")
    assert fast["message_id"] is None and fast["cross_seq"] == 81234567902
    wallet = one("v5_wallet", "wallet.json")
    assert wallet["symbol"] is None and wallet["account_type"] == "UNIFIED"
    assert [c["coin"] for c in wallet["coins"]] == ["BTC", "USDT"]
    assert wallet["coins"][0]["collateral_switch"] is True
    assert wallet["coins"][0]["available_to_withdraw"] == "" and wallet["coins"][0]["extra"] is None


def test_extra_fees_array_round_trips_exactly() -> None:
    raw = sample("execution_spot.json")
    fees = [{"feeCoin": "BTC", "feeType": "GST", "subFeeType": "IND_GST", "feeRate": "0.0000675",
             "fee": "0.00000027"}]
    raw["data"][0]["extraFees"] = fees
    rec = MAPPERS["v5_execution"](frame(raw))[0]
    decoded = read_back("v5_execution", rec)
    assert json.loads(decoded["extra_fees"]) == fees
    schema = load_schema("v5_execution")
    assert invert(schema["fields"], decoded, named_records(schema, {})) == raw["data"][0]


def test_unknown_keys_land_in_extra_also_inside_wallet_coins() -> None:
    raw = sample("publicTrade_spot.json")
    raw["data"][0]["L"] = "PlusTick"
    raw["data"][0]["zz"] = {"new": [1, 2]}
    recs = MAPPERS["v5_public_trade"](frame(raw))
    assert recs[0]["extra"] == {"L": '"PlusTick"', "zz": '{"new": [1, 2]}'}
    assert recs[1]["extra"] is None
    assert read_back("v5_public_trade", recs[0])["extra"] == recs[0]["extra"]
    wallet = sample("wallet.json")
    wallet["data"][0]["coin"][1]["newCoinField"] = "7"
    wallet["data"][0]["accountNew"] = True
    rec = one("v5_wallet", wallet)
    assert rec["extra"] == {"accountNew": "true"}
    assert rec["coins"][1]["extra"] == {"newCoinField": '"7"'} and rec["coins"][0]["extra"] is None
    schema = load_schema("v5_wallet")
    decoded = read_back("v5_wallet", rec)
    assert invert(schema["fields"], decoded, named_records(schema, {})) == wallet["data"][0]


def _set(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node = raw
    for step in path[:-1]:
        node = node[step]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


_DELETE = object()

BAD = [
    # missing required fields
    ("publicTrade_spot.json", "v5_public_trade", ("data", 1, "i"), _DELETE,
     "v5_public_trade.trade_id: Bybit field 'i' is missing"),
    ("orderbook_50_delta.json", "v5_orderbook", ("data", "u"), _DELETE,
     "v5_orderbook.update_id: Bybit field 'u' is missing"),
    ("order_spot.json", "v5_order", ("data", 0, "orderId"), None,
     "v5_order.order_id: Bybit field 'orderId' is missing"),
    ("execution_spot.json", "v5_execution", ("data", 0, "execId"), _DELETE,
     "v5_execution.exec_id: Bybit field 'execId' is missing"),
    ("kline_spot.json", "v5_kline", ("data", 0, "start"), None,
     "v5_kline.start_time: Bybit field 'start' is missing"),
    ("wallet.json", "v5_wallet", ("data", 0, "coin", 1, "coin"), _DELETE,
     "v5_wallet.coins: Bybit field 'coin': element 1: coin: Bybit field 'coin' is missing"),
    # wrong types
    ("publicTrade_spot.json", "v5_public_trade", ("data", 0, "p"), 121958.41,
     "v5_public_trade.price: Bybit field 'p': expected a string, got 121958.41"),
    ("publicTrade_spot.json", "v5_public_trade", ("data", 0, "BT"), "false",
     "v5_public_trade.is_block_trade: Bybit field 'BT': expected true or false, got \"false\""),
    ("publicTrade_spot.json", "v5_public_trade", ("data", 0, "T"), "1760000005125",
     "v5_public_trade.trade_time: Bybit field 'T': expected an integer, got \"1760000005125\""),
    ("publicTrade_spot.json", "v5_public_trade", ("data", 0, "seq"), True,
     "v5_public_trade.cross_seq: Bybit field 'seq': expected an integer, got true"),
    ("publicTrade_spot.json", "v5_public_trade", ("data", 2), "trade",
     "v5_public_trade.(item): expected an object, got str"),
    ("publicTrade_spot.json", "v5_public_trade", ("ts",), "1760000005128",
     "v5_public_trade.event_time: Bybit frame field 'ts': expected an integer, "
     "got \"1760000005128\""),
    ("order_spot.json", "v5_order", ("data", 0, "createdTime"), 1760000005122,
     "v5_order.created_time: Bybit field 'createdTime': expected an integer as a string, "
     "got 1760000005122"),
    ("execution_fast_spot.json", "v5_execution_fast", ("data", 0, "execTime"), "01760000005125",
     "v5_execution_fast.exec_time: Bybit field 'execTime': expected an integer as a string, "
     "got \"01760000005125\""),
    ("order_spot.json", "v5_order", ("data", 0, "cumFeeDetail"), {"BTC": 0.000006},
     "v5_order.cum_fee_detail: Bybit field 'cumFeeDetail': expected an object of strings"),
    ("order_spot.json", "v5_order", ("data", 0, "positionIdx"), 2**40,
     "v5_order.position_idx: Bybit field 'positionIdx': expected a 32-bit integer, "
     "got 1099511627776"),
    ("wallet.json", "v5_wallet", ("data", 0, "coin"), "",
     "v5_wallet.coins: Bybit field 'coin': expected a list of objects"),
    ("wallet.json", "v5_wallet", ("data", 0, "coin", 0, "marginCollateral"), "true",
     "v5_wallet.coins: Bybit field 'coin': element 0: margin_collateral: Bybit field "
     "'marginCollateral': expected true or false, got \"true\""),
    ("orderbook_50_delta.json", "v5_orderbook", ("data", "b"), [["1", "2", "3"]],
     "v5_orderbook.bids: Bybit field 'b': expected a list of [price, quantity] pairs"),
    ("orderbook_50_delta.json", "v5_orderbook", ("data", "a"), [["1", 2]],
     "v5_orderbook.asks: Bybit field 'a': book levels must be decimal strings"),
    ("orderbook_rpi_delta.json", "v5_orderbook_rpi", ("data", "b"), [["1", "2"]],
     "v5_orderbook_rpi.bids: Bybit field 'b': expected a list of [price, quantity, rpi quantity]"
     " triples"),
    ("orderbook_rpi_delta.json", "v5_orderbook_rpi", ("data", "a"), [["1", "2", None]],
     "v5_orderbook_rpi.asks: Bybit field 'a': book levels must be decimal strings"),
    ("orderbook_rpi_delta.json", "v5_orderbook_rpi", ("data", "a"), ["123"],
     "v5_orderbook_rpi.asks: Bybit field 'a': expected a list of [price, quantity, rpi quantity]"
     " triples"),
    # frames that do not fit
    ("orderbook_50_delta.json", "v5_orderbook", ("type",), "partial",
     "v5_orderbook.is_snapshot: Bybit frame field 'type' is 'partial', not snapshot or delta"),
    ("orderbook_50_delta.json", "v5_orderbook", ("data", "s"), "ETHUSDT",
     "v5_orderbook.symbol: Bybit field 's' is 'ETHUSDT' but the topic names 'BTCUSDT'"),
    ("tickers_spot.json", "v5_tickers", ("data", "symbol"), "ETHUSDT",
     "v5_tickers.symbol: Bybit field 'symbol' is 'ETHUSDT' but the topic names 'BTCUSDT'"),
    ("publicTrade_spot.json", "v5_public_trade", ("data", 2, "s"), "ETHUSDT",
     "v5_public_trade.symbol: Bybit field 's' is 'ETHUSDT' but the topic names 'BTCUSDT'"),
    ("orderbook_50_delta.json", "v5_orderbook", ("topic",), "orderbook.25.BTCUSDT",
     "v5_orderbook.depth: not a v5 book topic: 'orderbook.25'"),
    ("tickers_spot.json", "v5_tickers", ("data",), [{"symbol": "BTCUSDT"}, {}],
     "v5_tickers.(data): expected one object, got 2"),
]


@pytest.mark.parametrize(("name", "kind", "path", "value", "message"), BAD,
                         ids=[f"{b[1]}:{'.'.join(map(str, b[2]))}" for b in BAD])
def test_bad_input_raises_mapping_error(name: str, kind: str, path: tuple[Any, ...], value: Any,
                                        message: str) -> None:
    raw = _set(sample(name), path, value)
    with pytest.raises(MappingError) as info:
        MAPPERS[kind](frame(raw))
    assert str(info.value) == message


def test_absent_optional_fields_map_to_null_and_round_trip() -> None:
    raw = sample("publicTrade_spot.json")
    for trade in raw["data"]:
        del trade["RPI"], trade["seq"], trade["s"]  # older frames; `s` only repeats the topic
    recs = MAPPERS["v5_public_trade"](frame(raw))
    assert all(r["is_rpi"] is None and r["cross_seq"] is None for r in recs)
    assert all(r["symbol"] == "BTCUSDT" for r in recs)
    tickers = sample("tickers_spot.json")
    del tickers["cs"], tickers["data"]["usdIndexPrice"]
    rec = one("v5_tickers", tickers)
    assert rec["cross_seq"] is None and rec["usd_index_price"] is None
    read_back("v5_tickers", rec)


def test_a_1024_trade_frame_gives_1024_records_in_order() -> None:
    raw = sample("publicTrade_spot.json")
    base = raw["data"][0]
    raw["data"] = [{**base, "i": str(10**18 + n), "p": f"{121000 + n}.5"} for n in range(1024)]
    recs = MAPPERS["v5_public_trade"](frame(raw))
    assert len(recs) == 1024
    assert [r["trade_id"] for r in recs] == [str(10**18 + n) for n in range(1024)]
    assert recs[1023]["price"] == "122023.5" and recs[0]["event_time"] == raw["ts"]
    serialize = PlainAvroSerializer(load_schema("v5_public_trade"))
    assert len({serialize(r) for r in recs}) == 1024
    recs[0]["price"] = "changed"  # records do not share mutable state
    assert recs[1]["price"] == "121001.5"


@pytest.mark.parametrize(("name", "kind"), [("orderbook_200_delta.json", "v5_orderbook"),
                                            ("orderbook_rpi_delta.json", "v5_orderbook_rpi")])
def test_resync_marker_is_a_valid_empty_record(name: str, kind: str) -> None:
    data = frame(sample(name))
    marker = resync_marker(kind, data, "gap")
    raw = sample(name)
    assert (marker["is_snapshot"], marker["bids"], marker["asks"], marker["resync_reason"],
            marker["frame_type"], marker["extra"]) == (False, [], [], "gap", None, None)
    assert marker["update_id"] == raw["data"]["u"] and marker["cross_seq"] == raw["data"]["seq"]
    assert marker["symbol"] == "BTCUSDT" and marker["event_time"] == raw["ts"]
    assert marker["bybit_topic"] == data.topic_id
    decoded = read_back(kind, marker)
    assert {k: ms(v) for k, v in decoded.items()} == marker
    assert record_key(kind, marker) == b"BTCUSDT"


def test_resync_marker_rejects_non_book_kinds_and_bad_frames() -> None:
    with pytest.raises(ValueError, match="not a v5 book"):
        resync_marker("v5_public_trade", frame(sample("publicTrade_spot.json")), "gap")
    with pytest.raises(ValueError, match="reason"):
        resync_marker("v5_orderbook", frame(sample("orderbook_50_delta.json")), "")
    with pytest.raises(MappingError, match="update_id"):
        resync_marker("v5_orderbook", frame(_set(sample("orderbook_50_delta.json"),
                                                 ("data", "u"), "7")), "gap")


@pytest.mark.parametrize(("source", "kind", "key"), [
    ("orderbook_50_delta.json", "v5_orderbook", b"BTCUSDT"),
    ("orderbook_rpi_delta.json", "v5_orderbook_rpi", b"BTCUSDT"),
    ("publicTrade_spot.json", "v5_public_trade", b"BTCUSDT"),
    ("tickers_spot.json", "v5_tickers", b"BTCUSDT"),
    ("kline_spot.json", "v5_kline", b"BTCUSDT"),
    (PRICE_LIMIT, "v5_price_limit", b"BTCUSDT"),
    ("order_spot.json", "v5_order", b"2051734189062617856"),
    ("execution_spot.json", "v5_execution", b"2051734189062617856"),
    ("execution_fast_spot.json", "v5_execution_fast", b"2051734189062617856"),
    ("wallet.json", "v5_wallet", b"UNIFIED"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("v5_") else None)
def test_record_keys(source: str | dict[str, Any], kind: str, key: bytes) -> None:
    for record in MAPPERS[kind](frame(case_raw(source))):
        assert record_key(kind, record) == key


@pytest.mark.parametrize("kind", V5_KINDS)
def test_schema_names_bybit_in_aliases_and_docs(kind: str) -> None:
    schema = load_schema(kind)
    assert schema["namespace"] == "com.bybit.spot.v5"
    fastavro.parse_schema(schema)
    fields = [f for r in named_records(schema, {}).values() for f in r["fields"]]
    for field in fields:
        key = field.get("bybit") or field.get("bybit_frame")
        if key is not None:
            assert f"`{key}`" in field["doc"], field["name"]
            assert key == field["name"] or key in field.get("aliases", []), field["name"]
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        assert nullable == ("default" in field), field["name"]
    names = {f["name"] for f in schema["fields"]}
    assert {"stream", "bybit_topic", "symbol", "event_time", "receive_time", "extra"} <= names
    if kind in BOOK_KINDS:
        assert {"is_snapshot", "update_id", "cross_seq", "bids", "asks", "depth",
                "resync_reason", "matching_engine_time", "frame_type"} <= names


# -- serde: v5 book levels take the serializer's fast path, byte for byte ---------------

level_text = st.one_of(
    st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,12})?", fullmatch=True),  # Bybit's decimals
    st.text(max_size=80),  # anything else: non-ASCII, long (multi-byte length prefix)
)
PAIRS = st.lists(st.fixed_dictionaries({"price": level_text, "quantity": level_text}),
                 max_size=250)
TRIPLES = st.lists(st.fixed_dictionaries({"price": level_text, "quantity": level_text,
                                          "rpi_quantity": level_text}), max_size=250)
BOOK_RECORDS = {"v5_orderbook": one("v5_orderbook", "orderbook_50_delta.json"),
                "v5_orderbook_rpi": one("v5_orderbook_rpi", "orderbook_rpi_delta.json")}


def fastavro_bytes(kind: str, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(load_schema(kind)), record)
    return out.getvalue()


@settings(max_examples=150, deadline=None)
@given(bids=PAIRS, asks=PAIRS)
def test_v5_book_levels_bytes_equal_fastavro(bids: list[dict[str, str]],
                                             asks: list[dict[str, str]]) -> None:
    record = {**BOOK_RECORDS["v5_orderbook"], "bids": bids, "asks": asks}
    assert PlainAvroSerializer(load_schema("v5_orderbook"))(record) == fastavro_bytes(
        "v5_orderbook", record)


@settings(max_examples=150, deadline=None)
@given(bids=TRIPLES, asks=TRIPLES)
def test_v5_rpi_levels_bytes_equal_fastavro(bids: list[dict[str, str]],
                                            asks: list[dict[str, str]]) -> None:
    record = {**BOOK_RECORDS["v5_orderbook_rpi"], "bids": bids, "asks": asks}
    assert PlainAvroSerializer(load_schema("v5_orderbook_rpi"))(record) == fastavro_bytes(
        "v5_orderbook_rpi", record)


def test_rpi_levels_take_the_fast_path() -> None:
    segments = PlainAvroSerializer(load_schema("v5_orderbook_rpi"))._body._segments
    # fastavro part, bids, asks, fastavro part: the level arrays are written by serde itself
    assert len(segments) == 4


@pytest.mark.parametrize("kind", BOOK_KINDS)
@pytest.mark.parametrize("text", ["", "9" * 63, "9" * 64, "€" * 40, "1" * 600_000])
def test_v5_level_string_boundaries(kind: str, text: str) -> None:
    # 600,000 characters: the one-character length prefix would be past chr()'s range
    level = {"price": text, "quantity": "1", "rpi_quantity": text}
    record = {**BOOK_RECORDS[kind], "bids": [level, {**level, "quantity": text}], "asks": []}
    if kind == "v5_orderbook":
        record["bids"] = [{"price": lv["price"], "quantity": lv["quantity"]}
                          for lv in record["bids"]]
    assert PlainAvroSerializer(load_schema(kind))(record) == fastavro_bytes(kind, record)


@pytest.mark.parametrize("kind", BOOK_KINDS)
@pytest.mark.parametrize("bad", [1.5, None, ["2"]])
def test_v5_bad_level_value_names_the_field(kind: str, bad: Any) -> None:
    record = {**BOOK_RECORDS[kind]}
    record["asks"] = [{**record["bids"][0], "quantity": bad}]
    with pytest.raises(SerializationError, match="quantity must be a string"):
        PlainAvroSerializer(load_schema(kind))(record)


@pytest.mark.parametrize("kind", V5_KINDS)
def test_row_mapper_equals_map_item(kind: str) -> None:
    """The hot-path row mapper gives map_item's results and errors, value for value."""
    schema = load_schema(kind)
    plan = field_plan(schema, strict=True)
    known = frozenset(key for _, key, _, _ in plan)
    map_row = row_mapper(kind, plan, known)
    rows = [item for source, k in CASES if k == kind
            for item in frame(case_raw(source)).items]
    for source, k, path, value, _ in BAD:
        raw = _set(sample(source), path, value)
        if k == kind and path[0] == "data":
            rows += list(frame(raw).items)
    rows += [{**rows[0], "unknown": [1]}, {}, "not an object", {**rows[0], "x": None}]
    for row in rows:
        try:
            expected: Any = map_item(kind, plan, known, row, {})
        except MappingError as exc:
            expected = str(exc)
        try:
            got: Any = map_row(row, {})
        except MappingError as exc:
            got = str(exc)
        assert same_json(got, expected)
