"""Nothing Bybit sends is dropped: every key of every legacy market sample
(envelope, params, items) can be found again in the records it became.

Frames go through the client's real decoder here (``frames.decode``), so the
envelope values the decoder hands over are part of what is checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connector.bybit.events import MarketData, Stamp
from connector.bybit.legacy.frames import decode, market_topic_id
from connector.bybit.topics import lookup, topic_id
from connector.records import MAPPERS, MappingError, load_schema
from connector.records.mapping import field_plan

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STAMP = Stamp(wall_ms=1_700_000_000_123, mono_ns=1)
MARKET_SAMPLES = sorted(p.name for p in SAMPLES.glob("v[12]_*.json") if "ack" not in p.name)


def decoded(name: str) -> tuple[dict[str, Any], MarketData]:
    text = (SAMPLES / name).read_text()
    event = decode(text, "v1" if name.startswith("v1") else "v2", STAMP)
    assert isinstance(event, MarketData), event
    return json.loads(text), event


def kind_of(event: MarketData) -> str:
    spec = lookup(event.stream, event.topic)
    assert spec is not None
    return spec.kind


def _same(sent: Any, kept: Any) -> bool:
    """Bybit's value and the record's, modulo the documented lossless conversions."""
    if isinstance(kept, bool) or isinstance(sent, bool):
        return str(sent).lower() == str(kept).lower()
    if isinstance(kept, int) and isinstance(sent, str):
        return int(sent) == kept
    if isinstance(kept, str) and not isinstance(sent, str):
        return json.dumps(sent) == kept
    if isinstance(kept, list):  # book levels
        return [[lv["price"], lv["quantity"]] for lv in kept] == sent
    return bool(sent == kept)


@pytest.mark.parametrize("name", MARKET_SAMPLES)
def test_every_value_bybit_sent_is_in_the_records(name: str) -> None:
    frame, event = decoded(name)
    kind = kind_of(event)
    records = MAPPERS[kind](event)
    assert len(records) == len(event.items)
    by_key = {key: field for field, key, _, _ in field_plan(load_schema(kind))}
    for item, rec in zip(event.items, records, strict=True):
        for key, value in item.items():
            if key in by_key:
                assert _same(value, rec[by_key[key]]), (key, value)
            elif key in ("s", "symbol"):
                assert rec["item_symbol"] == value == rec["symbol"]
            else:
                assert rec["extra"] is not None and json.loads(rec["extra"][key]) == value
        # The frame: every envelope key and every param, on every record.
        frame_fields = {"symbol": "symbol", "symbolName": "frame_symbol_name",
                        "f": "first_message", "sendTime": "send_time"}
        param_fields = {"binary": "binary", "klineType": "interval", "dumpScale": "dump_scale",
                        "symbol": "symbol", "symbolName": "frame_symbol_name"}
        for key, value in frame.items():
            if key in ("data", "params"):
                continue
            if key == "topic":
                assert rec["bybit_topic"] == market_topic_id(event)
            elif key in frame_fields:
                assert _same(value, rec[frame_fields[key]]), (key, value)
            else:
                assert json.loads(rec["frame_extra"][key]) == value, key
        for key, value in frame.get("params", {}).items():
            if key in param_fields:
                assert _same(value, rec[param_fields[key]]), (key, value)
            else:
                assert json.loads(rec["frame_extra"][f"params.{key}"]) == value, key


def test_frame_level_values_are_copied_to_each_record() -> None:
    frame, event = decoded("v1_trade.json")
    item = event.items[0]
    many = MarketData("v1", "trade", "BTCUSDT", event.params,
                      (item, {**item, "v": "2"}), True, 5, STAMP, frame=frame)
    for rec in MAPPERS["v1_trade"](many):
        assert (rec["first_message"], rec["frame_symbol_name"], rec["binary"]) == (
            True, "BTCUSDT", False)
        assert rec["frame_extra"] == {"params.realtimeInterval": '"24h"'}
    _, lt = decoded("v1_lt.json")
    assert MAPPERS["v1_lt"](lt)[0]["first_message"] is True  # Bybit sent "True"
    _, later = decoded("v1_realtimes_string_t.json")
    rec = MAPPERS["v1_realtimes"](later)[0]
    assert rec["first_message"] is False and rec["frame_extra"] == {"shared": "false"}


@pytest.mark.parametrize(("name", "expected"), [
    ("v1_kline.json", topic_id("kline", interval="15m")),
    ("v2_kline.json", topic_id("kline", interval="1m")),
    ("v1_mergeddepth.json", topic_id("mergedDepth", dump_scale=1)),
    ("v1_trade.json", "trade"),
])
def test_bybit_topic_is_the_subscription_topic_id(name: str, expected: str) -> None:
    _, event = decoded(name)
    assert MAPPERS[kind_of(event)](event)[0]["bybit_topic"] == expected == market_topic_id(event)


@pytest.mark.parametrize("name", ["v1_realtimes.json", "v1_depth.json", "v2_bookticker.json",
                                  "v2_kline.json"])
def test_item_symbol_other_than_the_frames_is_refused(name: str) -> None:
    frame, event = decoded(name)
    item = dict(event.items[0])
    item["symbol" if "symbol" in item else "s"] = "ETHBTC"
    bad = MarketData(event.stream, event.topic, event.symbol, event.params, (item,),
                     event.first, event.send_time_ms, STAMP, frame=frame)
    with pytest.raises(MappingError, match="item_symbol: item symbol \"ETHBTC\" differs from "
                                           "the frame's symbol 'BTCUSDT'"):
        MAPPERS[kind_of(event)](bad)


def test_unreadable_frame_flag_is_refused_not_guessed() -> None:
    frame, event = decoded("v1_trade.json")
    bad = MarketData("v1", "trade", "BTCUSDT", event.params, event.items, True, 1, STAMP,
                     frame={**frame, "params": {"binary": "maybe"}})
    with pytest.raises(MappingError, match=r"v1_trade\.\(frame\)"):
        MAPPERS["v1_trade"](bad)
