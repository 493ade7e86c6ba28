"""Bybit v5 frames → typed events, from every sample in tests/samples/v5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.bybit.events import AuthResult, Pong, Stamp, Undecodable, V5Data
from connector.bybit.family import AckInfo
from connector.bybit.v5.family import V5Family
from connector.bybit.v5.frames import OpAck, decode

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "v5"
STAMP = Stamp(1760000005200, 1)


def load(name: str) -> str:
    return (SAMPLES / f"{name}.json").read_text()


def test_ack_success_public_and_private() -> None:
    spot = decode(load("subscribe_ack_success_public_spot"), "v5", STAMP)
    assert spot == OpAck("subscribe", "sub-0001", True, "subscribe") and spot.ok
    private = decode(load("subscribe_ack_success_private"), "v5-private", STAMP)
    assert private == OpAck("subscribe", "psub-0001", True, "") and private.ok


def test_ack_failures() -> None:
    bad = decode(load("subscribe_ack_failure_handler_not_found"), "v5", STAMP)
    assert isinstance(bad, OpAck) and not bad.ok and bad.req_id == "sub-0002"
    assert "handler not found" in bad.msg
    too_many = decode(load("subscribe_ack_failure_too_many_args_UNVERIFIED"), "v5", STAMP)
    assert isinstance(too_many, OpAck) and not too_many.ok


def test_already_subscribed_is_success() -> None:
    ack = decode(load("subscribe_ack_failure_already_subscribed"), "v5", STAMP)
    assert isinstance(ack, OpAck) and not ack.success and ack.ok


def test_unsubscribe_ack() -> None:
    ack = decode(load("unsubscribe_ack_public_spot_INFERRED"), "v5", STAMP)
    assert ack == OpAck("unsubscribe", "unsub-0001", True, "unsubscribe")


def test_ack_without_req_id() -> None:
    ack = decode('{"success":true,"ret_msg":"subscribe","conn_id":"x","op":"subscribe"}',
                 "v5", STAMP)
    assert isinstance(ack, OpAck) and ack.req_id is None
    assert V5Family("v5").ack(ack) == AckInfo(True, "subscribe", None, "subscribe")


@pytest.mark.parametrize(("name", "stream", "ts"), [("pong_public_spot", "v5", 0),
                                                    ("pong_private", "v5-private",
                                                     1760000005200)])
def test_both_pong_shapes(name: str, stream: str, ts: int) -> None:
    assert decode(load(name), stream, STAMP) == Pong(ts)  # type: ignore[arg-type]


def test_auth_responses() -> None:
    assert decode(load("auth_response_success"), "v5-private", STAMP) == AuthResult(True, "")
    assert decode(load("auth_response_failure"), "v5-private", STAMP) == AuthResult(
        False, "Params Error")


BOOKS = [("orderbook_1_snapshot", "orderbook.1", "snapshot"),
         ("orderbook_1_snapshot_resend_unchanged", "orderbook.1", "snapshot"),
         ("orderbook_50_snapshot", "orderbook.50", "snapshot"),
         ("orderbook_50_delta", "orderbook.50", "delta"),
         ("orderbook_50_snapshot_u1_restart", "orderbook.50", "snapshot"),
         ("orderbook_200_snapshot", "orderbook.200", "snapshot"),
         ("orderbook_200_delta", "orderbook.200", "delta"),
         ("orderbook_1000_snapshot", "orderbook.1000", "snapshot"),
         ("orderbook_1000_delta", "orderbook.1000", "delta"),
         ("orderbook_rpi_delta", "orderbook.rpi", "delta"),
         ("orderbook_full_delta", "orderbook.full", "delta")]


@pytest.mark.parametrize(("name", "topic_id", "kind"), BOOKS)
def test_book_frames(name: str, topic_id: str, kind: str) -> None:
    raw = load(name)
    msg = json.loads(raw)
    data = decode(raw, "v5", STAMP)
    assert isinstance(data, V5Data)
    assert (data.stream, data.topic, data.topic_id, data.symbol, data.type) == (
        "v5", msg["topic"], topic_id, "BTCUSDT", kind)
    assert data.ts == msg["ts"] and data.cts == msg["cts"] and data.cs is None
    assert data.items == (msg["data"],) and data.items[0]["u"] == msg["data"]["u"]
    assert data.size == len(raw) and data.raw == raw and data.stamp == STAMP


@pytest.mark.parametrize(("name", "topic_id"), [("publicTrade_spot", "publicTrade"),
                                                ("kline_spot", "kline.1"),
                                                ("kline_spot_confirmed", "kline.1"),
                                                ("tickers_spot", "tickers")])
def test_public_frames(name: str, topic_id: str) -> None:
    raw = load(name)
    msg = json.loads(raw)
    data = decode(raw, "v5", STAMP)
    assert isinstance(data, V5Data)
    assert data.topic_id == topic_id and data.symbol == msg["topic"].rsplit(".", 1)[1]
    items = msg["data"] if isinstance(msg["data"], list) else [msg["data"]]
    assert data.items == tuple(items) and data.ts == msg["ts"] and data.type == msg.get("type")
    assert data.cs == msg.get("cs")


def test_tickers_carry_cs_and_trades_keep_every_item() -> None:
    tick = decode(load("tickers_spot"), "v5", STAMP)
    assert isinstance(tick, V5Data) and tick.cs == 81234567905
    trades = decode(load("publicTrade_spot"), "v5", STAMP)
    assert isinstance(trades, V5Data) and len(trades.items) >= 2


@pytest.mark.parametrize(("name", "topic"), [("order_spot", "order.spot"),
                                             ("execution_spot", "execution.spot"),
                                             ("execution_fast_spot", "execution.fast.spot"),
                                             ("wallet", "wallet")])
def test_private_frames(name: str, topic: str) -> None:
    raw = load(name)
    msg = json.loads(raw)
    data = decode(raw, "v5-private", STAMP)
    assert isinstance(data, V5Data)
    assert (data.topic, data.topic_id, data.symbol, data.type, data.ts) == (
        topic, topic, "", None, None)
    assert data.creation_time == msg["creationTime"] and data.msg_id == msg.get("id")
    assert data.items == tuple(msg["data"])


def test_price_limit_without_type() -> None:
    raw = ('{"topic":"priceLimit.BTCUSDT","ts":1,"data":{"symbol":"BTCUSDT",'
           '"buyLmt":"1","sellLmt":"2"}}')
    data = decode(raw, "v5", STAMP)
    assert isinstance(data, V5Data) and data.type is None and data.topic_id == "priceLimit"


@pytest.mark.parametrize(("raw", "reason"), [
    ("{not json", "invalid_json"),
    (b"{\"a\":\"\xff\"}", "invalid_utf8"),
    # text frames are UTF-8 (RFC 6455): json.loads alone would take UTF-16/32
    # and encoded surrogates; a frame in another encoding is not Bybit's
    ('{"topic":"tickers.BTCUSDT","data":{}}'.encode("utf-16"), "invalid_utf8"),
    # (UTF-32 without a BOM is valid UTF-8, full of NULs: not JSON)
    ('{"topic":"tickers.BTCUSDT","data":{}}'.encode("utf-32-le"), "invalid_json"),
    (b"{\"a\":\"\xed\xa0\x80\"}", "invalid_utf8"),
    ("[1,2]", "unknown_shape"),
    ('{"hello":"world"}', "unknown_shape"),
    ('{"topic":"publicTrade.BTCUSDT","data":42}', "unknown_shape"),
    ('{"topic":"publicTrade.BTCUSDT","data":[1]}', "unknown_shape"),
    ('{"topic":"nosymbol","data":{}}', "unknown_shape"),
    ('{"topic":7,"data":{}}', "unknown_shape"),
    ('"just a string"', "unknown_shape"),
])
def test_garbage_is_undecodable(raw: str | bytes, reason: str) -> None:
    event = decode(raw, "v5", STAMP)
    assert isinstance(event, Undecodable) and event.reason == reason
    assert event.raw == (raw.encode() if isinstance(raw, str) else raw)


def test_binary_frames_are_unexpected() -> None:
    event = decode(b"\x1f\x8b", "v5", STAMP, binary=True)
    assert isinstance(event, Undecodable) and event.reason == "unexpected_binary"


def test_family_routes_data_and_acks() -> None:
    fam = V5Family("v5")
    data = decode(load("orderbook_50_delta"), "v5", STAMP)
    info = fam.data(data)
    assert info is not None and info.pairs == (("orderbook.50", "BTCUSDT"),)
    assert fam.ack(data) is None and fam.data(Pong(0)) is None
