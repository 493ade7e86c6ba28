"""The raw frame archive and ``replay`` against a real Kafka broker.

Frames go through the real decoders, pipeline, archive and ``KafkaSink``
exactly as a connection hands them over (no WebSocket needed: the archive
starts where frames enter the pipeline). Then ``replay`` reads the archive or
the dead-letter topic back with today's mappers.
"""

from __future__ import annotations

import io
import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector import records
from connector.archive.replay import Selection, Summary, run_replay
from connector.archive.writer import Archive, archive_topics
from connector.bybit.events import Stamp
from connector.bybit.v5 import frames as v5_frames
from connector.cli import main
from connector.config.load import loads
from connector.config.model import Config
from connector.dev.consume import Message, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.pipeline.core import Pipeline, build_routes
from connector.scaleout.handover import seed_trade_dedup
from connector.service import serializer_factory
from connector.sink.kafka_sink import KafkaSink, ensure_topics

pytestmark = pytest.mark.integration

T0 = 1_760_000_000_000
TRADES_PER_FRAME = 3


def make_config(bootstrap: str, prefix: str, archive_prefix: str | None = None) -> Config:
    return loads(config_text(bootstrap, prefix, archive_prefix), env={})


def config_text(bootstrap: str, prefix: str, archive_prefix: str | None = None) -> str:
    return f"""
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
archive:
  enabled: true
  topic_template: "{archive_prefix or prefix}.raw.{{stream}}"
metrics: {{enabled: false}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [BTCUSDT, ETHUSDT]}}
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT]}}
"""


def trade_frame(n: int, symbol: str) -> bytes:
    data = [{"T": T0 + n, "s": symbol, "S": "Buy" if i % 2 else "Sell", "v": f"0.{n}{i}",
             "p": f"{100 + n}.{i}", "i": f"{symbol}-{n}-{i}", "BT": False, "RPI": False,
             "seq": 1000 + n} for i in range(TRADES_PER_FRAME)]
    return json.dumps({"topic": f"publicTrade.{symbol}", "ts": T0 + n, "type": "snapshot",
                       "data": data}).encode()


def book_frame(n: int) -> bytes:
    kind = "snapshot" if n == 0 else "delta"
    return json.dumps({"topic": "orderbook.50.BTCUSDT", "ts": T0 + n, "type": kind,
                       "data": {"s": "BTCUSDT", "b": [[f"{100 - n}", f"{n + 1}"]],
                                "a": [[f"{101 + n}", "1"]], "u": 1 + n, "seq": 5000 + n},
                       "cts": T0 + n - 1}).encode()


def frames(count: int) -> Iterator[bytes]:
    for n in range(count):
        yield trade_frame(n, "BTCUSDT")
        yield trade_frame(n, "ETHUSDT")
        yield book_frame(n)


def stream_live(config: Config, raws: Iterator[bytes], reject: bool = False) -> None:
    """What a running connector does with these frames (``reject``: a mapping
    that refuses every publicTrade frame)."""
    topics = [*{config.kafka_topic(s) for s in config.subscriptions},
              config.kafka.dead_letter_topic, *archive_topics(config)]
    ensure_topics(config.kafka, topics)
    serializer_for = serializer_factory(config)
    with KafkaSink(config.kafka, warm_topics=topics) as sink:
        routes = build_routes(config, serializer_for)
        if reject:
            def refuse(_data: Any) -> list[dict[str, Any]]:
                raise records.MappingError("v5_public_trade", "taker_side", "refused")
            routes[("v5", "publicTrade")].mapper = refuse
        pipeline = Pipeline(routes, sink, archive=Archive(config, serializer_for, sink))
        for n, raw in enumerate(raws):
            pipeline.handle(v5_frames.decode(raw, "v5", Stamp(T0 + 500 + n, n)))
        assert sink.flush(30) == 0


def replay(config: Config, source: str, **kw: Any) -> Summary:
    out = io.StringIO()
    summary = run_replay(config, Selection(source, **kw), False, out)
    assert "already present" in out.getvalue()
    return summary


def typed(broker: KafkaBroker, config: Config) -> dict[str, list[Message]]:
    topics = sorted({config.kafka_topic(s) for s in config.subscriptions})
    return read_all(broker.bootstrap_servers, topics, timeout=20)


def per_key(messages: list[Message]) -> dict[bytes | None, list[tuple[bytes, list[Any]]]]:
    out: dict[bytes | None, list[tuple[bytes, list[Any]]]] = defaultdict(list)
    for m in messages:
        out[m.key].append((m.value, sorted(m.headers.items())))
    return dict(out)


@pytest.fixture
def prefix() -> str:
    return f"replay.{uuid.uuid4().hex[:8]}"


def test_dead_lettered_frames_land_exactly_once_after_replay(kafka_broker: KafkaBroker,
                                                             prefix: str) -> None:
    config = make_config(kafka_broker.bootstrap_servers, prefix)
    stream_live(config, frames(10), reject=True)
    trade_topic = config.kafka_topic(config.subscriptions[0])
    assert typed(kafka_broker, config)[trade_topic] == []

    first = replay(config, config.kafka.dead_letter_topic)
    assert (first.selected, first.written, first.still_failing) == (20, 60, 0)
    second = replay(config, config.kafka.dead_letter_topic)
    assert (second.written, second.present) == (0, 60)

    decoded = [json.loads(json.dumps(_decode(m), default=str))
               for m in typed(kafka_broker, config)[trade_topic]]
    ids = sorted(r["trade_id"] for r in decoded)
    assert ids == sorted(f"{s}-{n}-{i}" for s in ("BTCUSDT", "ETHUSDT") for n in range(10)
                         for i in range(TRADES_PER_FRAME))
    assert min(r["receive_time"] for r in decoded) == str(_ms(T0 + 500))


def test_replaying_an_archive_twice_writes_nothing(kafka_broker: KafkaBroker,
                                                   prefix: str) -> None:
    config = make_config(kafka_broker.bootstrap_servers, prefix)
    stream_live(config, frames(15))
    before = typed(kafka_broker, config)
    for _ in range(2):
        summary = replay(config, f"{prefix}.raw.v5")
        assert summary.selected == 45
        assert (summary.written, summary.markers, summary.still_failing) == (0, 0, 0)
        assert summary.present == 2 * 15 * TRADES_PER_FRAME + 15
    assert typed(kafka_broker, config) == before


def test_a_typed_topic_rebuilt_from_the_archive_equals_the_original(kafka_broker: KafkaBroker,
                                                                    prefix: str) -> None:
    original = make_config(kafka_broker.bootstrap_servers, prefix)
    stream_live(original, frames(25))
    # The typed topics gone: a config writing to new, empty ones reads the same archive.
    rebuilt = make_config(kafka_broker.bootstrap_servers, f"{prefix}.rebuilt",
                          archive_prefix=prefix)
    summary = replay(rebuilt, f"{prefix}.raw.v5")
    assert (summary.written, summary.present, summary.markers) == (
        2 * 25 * TRADES_PER_FRAME + 25, 0, 0)
    old, new = typed(kafka_broker, original), typed(kafka_broker, rebuilt)
    for sub_old, sub_new in zip(original.subscriptions, rebuilt.subscriptions, strict=True):
        a, b = old[original.kafka_topic(sub_old)], new[rebuilt.kafka_topic(sub_new)]
        assert len(a) == len(b) > 0
        assert per_key(a) == per_key(b)  # values, headers, keys, order per key


def test_a_replayed_book_segment_is_framed_by_markers(kafka_broker: KafkaBroker,
                                                      prefix: str) -> None:
    config = make_config(kafka_broker.bootstrap_servers, prefix)
    stream_live(config, (book_frame(n) for n in range(5)))
    # An archive that goes on for 3 frames more than the typed topic holds.
    other = make_config(kafka_broker.bootstrap_servers, f"{prefix}.x",
                        archive_prefix=f"{prefix}.b")
    stream_live(other, (book_frame(n) for n in range(8)))
    summary = replay(config, f"{prefix}.b.raw.v5")
    assert (summary.written, summary.rewritten, summary.markers) == (3, 5, 2)
    book = [_decode(m) for m in typed(kafka_broker, config)[config.kafka_topic(
        config.subscriptions[1])]]
    seen = [(r["update_id"], r["is_snapshot"], r["resync_reason"]) for r in book]
    assert seen[:5] == [(u, u == 1, None) for u in range(1, 6)]
    assert seen[5] == (1, False, "replay")  # discard the book: a segment follows
    assert seen[6:-1] == [(u, u == 1, None) for u in range(1, 9)]  # from its snapshot
    assert seen[-1] == (8, False, "replay_end")  # discard again, wait for a snapshot
    again = replay(config, f"{prefix}.b.raw.v5")
    assert (again.written, again.rewritten, again.markers) == (0, 0, 0)


def _decode(m: Message) -> dict[str, Any]:
    from connector.dev.consume import AvroDecoder

    kind = "v5_public_trade" if "publicTrade" in m.topic else "v5_orderbook"
    return AvroDecoder().decode(kind, m)


def _ms(wall_ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(wall_ms / 1000, UTC)


def test_dry_run_prints_and_writes_nothing(kafka_broker: KafkaBroker, prefix: str,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(kafka_broker.bootstrap_servers, prefix)
    stream_live(config, frames(3), reject=True)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(kafka_broker.bootstrap_servers, prefix))
    code = main(["replay", "-c", str(path), "--source", config.kafka.dead_letter_topic,
                 "--symbol", "ETHUSDT", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count(f"would write {prefix}.v5.publicTrade key=") == 3 * TRADES_PER_FRAME
    assert '"trade_id": "ETHUSDT-2-0"' in out and "BTCUSDT-" not in out
    assert "dry run: read 6, selected 3, written 9" in out
    assert typed(kafka_broker, config)[config.kafka_topic(config.subscriptions[0])] == []


def test_seeding_finds_what_a_live_run_wrote(kafka_broker: KafkaBroker, prefix: str) -> None:
    """Seeding (``handover.seed_trade_dedup``) reads back the trade ids a live run
    wrote, so a replay of them is never written a second time."""
    config = make_config(kafka_broker.bootstrap_servers, prefix)
    stream_live(config, frames(4))
    routes = build_routes(config, serializer_factory(config))
    assert seed_trade_dedup(config, routes, config.subscriptions,
                            per_symbol=1000) == 2 * 4 * TRADES_PER_FRAME
    assert len(routes[("v5", "publicTrade")].dedup["ETHUSDT"]) == 4 * TRADES_PER_FRAME


def test_a_running_connector_archives_what_it_streams(kafka_broker: KafkaBroker,
                                                     prefix: str) -> None:
    """The service wiring: the raw topic is created and fed by the connections
    (only the subscriptions that archive); replaying it writes nothing new."""
    from test_end_to_end_v5 import subscribed, wait

    from connector.exchange import ExchangeServer
    from connector.service import Connector

    with ExchangeServer(port=0, rate=20) as exchange:
        config = loads(f"""
bybit:
  urls: {{v5: {exchange.url}/v5/public/spot}}
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
archive: {{topic_template: "{prefix}.raw.{{stream}}"}}
metrics: {{enabled: false}}
subscriptions:
  - {{stream: v5, topic: orderbook, depth: 50, symbols: [BTCUSDT], archive: true}}
  - {{stream: v5, topic: publicTrade, symbols: [BTCUSDT], archive: true}}
  - {{stream: v5, topic: tickers, symbols: [BTCUSDT]}}
""", env={})
        connector = Connector(config).start()
        raw_topic = f"{prefix}.raw.v5"
        try:
            wait(lambda: subscribed(connector), what="subscribed")
            wait(lambda: len(read_all(kafka_broker.bootstrap_servers, [raw_topic],
                                      timeout=5)[raw_topic]) > 20, what="frames archived")
        finally:
            connector.stop()
    raw = read_all(kafka_broker.bootstrap_servers, [raw_topic], timeout=20)[raw_topic]
    assert {m.key for m in raw} == {b"orderbook.50|BTCUSDT", b"publicTrade|BTCUSDT"}
    from connector.dev.consume import AvroDecoder
    first = AvroDecoder().decode("raw_frame", raw[0])
    assert first["connection"].startswith("ws-v5") and first["decoded"]
    summary = replay(config, raw_topic)
    assert summary.selected == len(raw)
    assert (summary.written, summary.rewritten, summary.markers, summary.still_failing) == (
        0, 0, 0, 0)
