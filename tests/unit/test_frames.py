"""Every spec sample decodes to the expected event; compressed frames decode
the same; garbage becomes Undecodable with the right reason."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest

from connector.bybit.events import (
    Ack,
    AuthResult,
    MarketData,
    Pong,
    PrivateData,
    ServerPing,
    Stamp,
    SubError,
    Undecodable,
)
from connector.bybit.legacy.frames import decode, decompress, market_topic_id

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STAMP = Stamp(1_700_000_000_000, 42)


def raw(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_control_frames() -> None:
    assert decode(raw("pong.json"), "v1", STAMP) == Pong(1535975085152)
    assert decode(raw("server_ping.json"), "v2", STAMP) == ServerPing(1641489450001)
    assert decode(raw("auth_success.json"), "private", STAMP) == AuthResult(True, "success")
    assert decode('{"auth":"fail"}', "private", STAMP) == AuthResult(False, "fail")


def test_acks_and_errors() -> None:
    ack = decode(raw("v1_sub_ack.json"), "v1", STAMP)
    assert ack == Ack("trade", "BTCUSDT", "sub", {"binary": "false"}, "0", "Success")
    assert isinstance(ack, Ack) and ack.ok
    bad = decode('{"topic":"kline_2m","event":"sub","symbol":"BTCUSDT","params":{},'
                 '"code":"-10001","msg":"Invalid topic"}', "v1", STAMP)
    assert isinstance(bad, Ack) and not bad.ok and bad.msg == "Invalid topic"
    assert decode(raw("sub_error_unnamed.json"), "v1", STAMP) == SubError(
        "-100010", "Invalid Symbols!")
    v2 = decode('{"topic":"depth","event":"sub","params":{"symbol":"ETHUSDT","binary":"false"},'
                '"code":"0","msg":"Success"}', "v2", STAMP)
    assert isinstance(v2, Ack) and v2.symbol == "ETHUSDT" and v2.ok


@pytest.mark.parametrize(("name", "stream", "topic", "symbol", "first", "send", "topic_id"), [
    ("v1_trade.json", "v1", "trade", "BTCUSDT", True, 1626249138535, "trade"),
    ("v1_realtimes.json", "v1", "realtimes", "BTCUSDT", True, 1673852937236, "realtimes"),
    ("v1_realtimes_string_t.json", "v1", "realtimes", "BTCUSDT", False, 1626252046034,
     "realtimes"),
    ("v1_kline.json", "v1", "kline", "BTCUSDT", True, 1626252389284, "kline_15m"),
    ("v1_depth.json", "v1", "depth", "BTCUSDT", True, 1626253839401, "depth"),
    ("v1_mergeddepth.json", "v1", "mergedDepth", "ETHUSDT", False, 1622541360301,
     "mergedDepth_1"),
    ("v1_diffdepth_snapshot.json", "v1", "diffDepth", "BTCUSDT", True, 1626253839401,
     "diffDepth"),
    ("v1_lt.json", "v1", "lt", "BTC3LUSDTNAV", True, 1650272320374, "lt"),  # "f": "True"
    ("v2_depth.json", "v2", "depth", "BTCUSDT", None, None, "depth"),
    ("v2_kline.json", "v2", "kline", "BTCUSDT", None, None, "kline_1m"),
    ("v2_trade.json", "v2", "trade", "BTCUSDT", None, None, "trade"),
    ("v2_bookticker.json", "v2", "bookTicker", "BTCUSDT", None, None, "bookTicker"),
    ("v2_realtimes.json", "v2", "realtimes", "BTCUSDT", None, None, "realtimes"),
])
def test_market_samples(name: str, stream: str, topic: str, symbol: str, first: bool | None,
                        send: int | None, topic_id: str) -> None:
    text = raw(name)
    event = decode(text, stream, STAMP)  # type: ignore[arg-type]
    assert isinstance(event, MarketData)
    assert (event.stream, event.topic, event.symbol) == (stream, topic, symbol)
    assert event.first is first and event.send_time_ms == send
    assert market_topic_id(event) == topic_id
    assert event.stamp == STAMP and event.raw == text and event.size == len(text)
    expected = json.loads(text)["data"]
    assert list(event.items) == (expected if isinstance(expected, list) else [expected])


@pytest.mark.parametrize("name", ["private_execution_report.json",
                                  "private_outbound_account_info.json",
                                  "private_stop_execution_report.json",
                                  "private_ticket_info.json"])
def test_private_samples_as_list_or_bare_object(name: str) -> None:
    event = decode(raw(name), "private", STAMP)
    assert isinstance(event, PrivateData) and len(event.events) == 1
    body = json.loads(raw(name))
    assert event.events[0] == (body[0] if isinstance(body, list) else body)


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress, deflate],
                         ids=["gzip", "zlib", "deflate"])
def test_compressed_frames_decode_like_text(compress: object) -> None:
    text = raw("v1_depth.json")
    packed = compress(text.encode())  # type: ignore[operator]
    event = decode(packed, "v1", STAMP, binary=True)
    plain = decode(text, "v1", STAMP)
    assert isinstance(event, MarketData) and isinstance(plain, MarketData)
    assert event.items == plain.items and event.raw == packed


@pytest.mark.parametrize(("frame", "binary", "reason"), [
    ("{not json", False, "invalid_json"),
    ("", False, "invalid_json"),
    (b"{\"a\": \"\xff\"}", False, "invalid_utf8"),
    ('{"topic":"trade","data":[]}'.encode("utf-16"), False, "invalid_utf8"),
    (b"{\"a\": \"\xed\xa0\x80\"}", False, "invalid_utf8"),
    (b"\x00\xffgarbage", True, "decompress_failed"),
    (gzip.compress(b"{\"a\": \"\xff\"}", mtime=0), True, "invalid_utf8"),  # mtime: one id per run
    ('{"hello":"world"}', False, "unknown_shape"),
    ("[1,2,3]", False, "unknown_shape"),
    ('"just a string"', False, "unknown_shape"),
    ('{"topic":"trade","data":[1]}', False, "unknown_shape"),
    ('{"topic":"trade","data":"x","symbol":"BTCUSDT"}', False, "unknown_shape"),
    ("[" * 100_000, False, "invalid_json"),
])
def test_garbage_is_undecodable(frame: str | bytes, binary: bool, reason: str) -> None:
    event = decode(frame, "v1", STAMP, binary=binary)
    assert isinstance(event, Undecodable)
    assert event.reason == reason
    assert event.raw == (frame.encode() if isinstance(frame, str) else frame)


def test_private_list_with_non_events_is_undecodable() -> None:
    assert isinstance(decode('[{"e":"ticketInfo"}, 3]', "private", STAMP), Undecodable)


def test_zip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"0" * (20 * 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds"):
        decompress(bomb)
    assert decode(bomb, "v1", STAMP, binary=True).reason == "frame_too_large"  # type: ignore[union-attr]


def test_decompression_is_capped_at_max_frame_bytes() -> None:
    frame = gzip.compress(json.dumps({"topic": "trade", "symbol": "BTCUSDT", "data": [],
                                      "pad": "x" * 100_000}).encode())
    assert isinstance(decode(frame, "v1", STAMP, binary=True), MarketData)
    small = decode(frame, "v1", STAMP, binary=True, max_bytes=50_000)
    assert isinstance(small, Undecodable) and small.reason == "frame_too_large"
    assert small.raw == frame  # the compressed frame is within the cap: kept whole
