"""``replay``'s pure pieces: what a source record holds, which decoder reads
it, and what makes two typed records the same."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from connector.archive.replay import SourceFrame, decode_frame, identity, source_frame
from connector.bybit.events import MarketData, V5Data

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def dead_letter(value: bytes, reason: str = "mapping_failed", **headers: str) -> SimpleNamespace:
    """A dead-letter record; ``bybit_received_ms`` stands for ``bybit.received_ms``."""
    return SimpleNamespace(value=value, timestamp=42, headers=[
        ("dlq.reason", reason.encode()),
        *((k.replace("bybit_", "bybit.", 1), v.encode()) for k, v in headers.items())])


def test_a_dead_letter_gives_its_frame_and_where_it_belongs() -> None:
    raw = (SAMPLES / "v5" / "publicTrade_spot.json").read_bytes()
    m = dead_letter(raw, bybit_stream="v5", bybit_topic="publicTrade", bybit_symbol="BTCUSDT",
                    bybit_received_ms="1760000005200")
    frame = source_frame(m, False, None, False)
    assert frame == SourceFrame("v5", "publicTrade", "BTCUSDT", 1_760_000_005_200, raw)
    event = decode_frame(frame)
    assert isinstance(event, V5Data) and event.stamp.wall_ms == 1_760_000_005_200


def test_dead_letters_without_a_frame_to_replay_are_skipped() -> None:
    assert source_frame(dead_letter(b"x", "delivery_failed", bybit_stream="v5"),
                        False, None, False) is None
    assert source_frame(dead_letter(b"", bybit_stream="v5"), False, None, False) is None
    # An older dead letter without a receive time: the record's own timestamp.
    frame = source_frame(dead_letter(b"{}", bybit_stream="v5"), False, None, False)
    assert frame is not None and frame.received_ms == 42


def test_a_dead_lettered_legacy_binary_frame_is_decompressed_again() -> None:
    text = (SAMPLES / "v1_trade.json").read_bytes()
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    event = decode_frame(SourceFrame("v1", "trade", "BTCUSDT", 1, packer.compress(text)
                                     + packer.flush()))
    assert isinstance(event, MarketData) and event.topic == "trade"


def test_identities() -> None:
    when = datetime.fromtimestamp(1_760_000_000.123, UTC)
    assert identity("v5_order", {"order_id": "o1", "updated_time": when}, b"a") == \
        identity("v5_order", {"order_id": "o1", "updated_time": 1_760_000_000_123}, b"b")
    assert identity("v5_public_trade", {"symbol": "BTCUSDT", "trade_id": "7"}, b"a") == \
        identity("v5_public_trade", {"symbol": "BTCUSDT", "trade_id": "7"}, b"b")
    assert identity("v5_execution", {"exec_id": "e"}, b"a") == ("exec", "e")
    book = {"symbol": "BTCUSDT", "update_id": 5, "is_snapshot": False, "resync_reason": None}
    assert identity("v5_orderbook", book, b"a") != identity(
        "v5_orderbook", {**book, "resync_reason": "replay"}, b"a")
    assert identity("v5_tickers", {}, b"value") == b"value"
