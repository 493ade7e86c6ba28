"""The raw frame archive: what is archived (per subscription or globally), how
(Avro ``raw_frame``, keyed by Bybit topic and symbol, legacy binary frames
decompressed), and that it happens before mapping, so a frame the mapper
rejects is archived too. A recording sink: nothing here is about delivery."""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from connector import records
from connector.archive.writer import Archive, archive_topics
from connector.bybit.events import Stamp
from connector.bybit.legacy import frames
from connector.bybit.v5 import frames as v5_frames
from connector.config.load import loads
from connector.config.model import Config
from connector.dev.consume import _plain
from connector.errors import ConfigError, ConnectorError
from connector.pipeline.core import DEAD_LETTER_FRAME_MAX, Pipeline, build_routes
from connector.service import serializer_factory

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STAMP = Stamp(1_760_000_005_200, 123)


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []
        self.dead: list[tuple[bytes, str, dict[str, bytes]]] = []

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int,
             ref: object = None) -> bool:
        self.sent.append((topic, key, value, dict(headers)))
        return True

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.dead.append((value, reason, dict(extra_headers)))

    def to(self, topic: str) -> list[tuple[str, bytes | None, bytes, dict[str, bytes]]]:
        return [s for s in self.sent if s[0] == topic]


def config(subscriptions: str, enabled: bool = False) -> Config:
    return loads(f"""
archive: {{enabled: {str(enabled).lower()}}}
subscriptions:
{subscriptions}
""", env={})


def decode_raw(value: bytes) -> dict[str, Any]:
    parsed = fastavro.parse_schema(records.load_schema("raw_frame"))
    out: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(value), parsed)
    return out


def wired(cfg: Config) -> tuple[Pipeline, RecordingSink]:
    sink = RecordingSink()
    ser = serializer_factory(cfg)
    archive = Archive(cfg, ser, sink) if archive_topics(cfg) else None
    return Pipeline(build_routes(cfg, ser), sink, archive=archive), sink


def trade_frame() -> bytes:
    return (SAMPLES / "v5" / "publicTrade_spot.json").read_bytes()


def test_archived_before_mapping_so_a_rejected_frame_is_archived_and_dead_lettered() -> None:
    cfg = config("  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}", enabled=True)
    pipe, sink = wired(cfg)

    def reject(_data: Any) -> list[dict[str, Any]]:
        raise records.MappingError("v5_public_trade", "price", "rejected for the test")

    for route in pipe._routes.values():
        route.mapper = reject
    raw = trade_frame()
    pipe.handle(v5_frames.decode(raw, "v5", STAMP))

    [(_, key, value, headers)] = sink.to("bybit.raw.v5")
    assert key == b"publicTrade|BTCUSDT"
    assert headers["bybit.stream"] == b"v5"
    assert "avro.schema.fingerprint" in headers
    rec = decode_raw(value)
    assert rec["frame"] == raw and rec["decoded"] and not rec["decompressed"]
    assert (rec["stream"], rec["bybit_topic"], rec["symbol"]) == ("v5", "publicTrade", "BTCUSDT")
    assert rec["received_time"] == datetime.fromtimestamp(STAMP.wall_ms / 1000, UTC)
    # The dead letter carries the whole frame and what replay needs to map it again.
    [(dead, reason, dead_headers)] = sink.dead
    assert (dead, reason) == (raw, "mapping_failed")
    assert dead_headers == {"bybit.stream": b"v5", "bybit.topic": b"publicTrade",
                            "bybit.symbol": b"BTCUSDT",
                            "bybit.received_ms": str(STAMP.wall_ms).encode()}


def test_only_subscriptions_that_archive_are_archived() -> None:
    cfg = config("""  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT], archive: true}
  - {stream: v5, topic: tickers, symbols: [BTCUSDT]}""")
    assert archive_topics(cfg) == ["bybit.raw.v5"]
    pipe, sink = wired(cfg)
    pipe.handle(v5_frames.decode(trade_frame(), "v5", STAMP))
    pipe.handle(v5_frames.decode((SAMPLES / "v5" / "tickers_spot.json").read_bytes(), "v5",
                                 STAMP))
    assert [decode_raw(v)["bybit_topic"] for _, _, v, _ in sink.to("bybit.raw.v5")] == [
        "publicTrade"]
    assert sink.to("bybit.spot.v5.tickers")  # still written, just not archived


def test_off_by_default() -> None:
    cfg = config("  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}")
    assert archive_topics(cfg) == []


def test_a_legacy_binary_frame_is_archived_decompressed() -> None:
    cfg = config("  - {stream: v1, topic: trade, symbols: [BTCUSDT], binary: true}",
                 enabled=True)
    pipe, sink = wired(cfg)
    text = (SAMPLES / "v1_trade.json").read_bytes()
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    packed = packer.compress(text) + packer.flush()
    pipe.handle(frames.decode(packed, "v1", STAMP, binary=True))
    [(_, key, value, _)] = sink.to("bybit.raw.v1")
    rec = decode_raw(value)
    assert rec["decompressed"] and rec["frame"] == text
    assert key == b"trade|BTCUSDT"


def test_an_oversized_dead_letter_refers_to_the_archive() -> None:
    cfg = config("  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}", enabled=True)
    pipe, sink = wired(cfg)

    def reject(_data: Any) -> list[dict[str, Any]]:
        raise ConnectorError("rejected for the test")

    for route in pipe._routes.values():
        route.mapper = reject
    raw = trade_frame().replace(b'"BT": false', b'"BT": false, "pad": "'
                                + b"x" * DEAD_LETTER_FRAME_MAX + b'"', 1)
    pipe.handle(v5_frames.decode(raw, "v5", STAMP))
    [(dead, _, headers)] = sink.dead
    assert dead == b""
    assert headers["dlq.archive_topic"] == b"bybit.raw.v5"
    assert headers["dlq.frame_bytes"] == str(len(raw)).encode()
    assert decode_raw(sink.to("bybit.raw.v5")[0][2])["frame"] == raw


def test_archive_topic_must_not_be_a_typed_topic() -> None:
    with pytest.raises(ConfigError, match=r"archive\.topic_template"):
        loads("""
archive: {enabled: true, topic_template: "bybit.spot.{stream}.publicTrade"}
subscriptions:
  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}
""", env={})


def test_consume_prints_an_archive_record() -> None:
    """``consume`` shows the frame as text (it was bytes JSON cannot hold)."""
    cfg = config("  - {stream: v5, topic: publicTrade, symbols: [BTCUSDT]}", enabled=True)
    pipe, sink = wired(cfg)
    pipe.handle(v5_frames.decode(trade_frame(), "v5", STAMP))
    shown = json.loads(json.dumps(_plain(decode_raw(sink.to("bybit.raw.v5")[0][2]))))
    assert shown["frame"] == trade_frame().decode()
    assert shown["received_time"] == STAMP.wall_ms
