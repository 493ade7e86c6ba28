"""The pipeline under hostile frames, without sockets: every frame is written,
dead-lettered or counted (never an exception out of ``handle``), and the
labels it counts with stay bounded whatever names the server sends."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from connector.bybit.events import Stamp, Undecodable
from connector.bybit.legacy import frames
from connector.config.load import loads
from connector.ops import metrics
from connector.pipeline.core import Pipeline, build_routes
from connector.records import load_schema
from connector.serde.serializers import PlainAvroSerializer

STAMP = Stamp(1_700_000_000_000, 0)
CONFIG = loads("""
kafka: {bootstrap_servers: ["127.0.0.1:9092"]}
bybit: {credentials: {api_key: k, api_secret: s}}
subscriptions:
  - {stream: v1, topic: trade, symbols: [BTCUSDT]}
  - {stream: private, topic: executionReport}
""")


class RecordingSink:
    """Records what the pipeline hands to Kafka (delivery itself is tested with a broker)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.dead: list[tuple[bytes, str]] = []

    def send(self, topic: str, key: bytes | None, value: bytes,
             headers: list[tuple[str, bytes]], received_mono_ns: int) -> bool:
        self.sent.append((topic, value))
        return True

    def dead_letter(self, value: bytes, reason: str, source: str, detail: str,
                    extra_headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.dead.append((value, reason))


def pipeline() -> tuple[Pipeline, RecordingSink]:
    sink = RecordingSink()
    routes = build_routes(CONFIG, lambda kind, _topic: PlainAvroSerializer(load_schema(kind)))
    return Pipeline(routes, sink), sink


def nested_trade(depth: int) -> str:
    item = json.dumps({"v": f"d{depth}", "t": 1, "p": "1", "q": "1", "m": True, "x": "@"})
    item = item.replace('"@"', "[" * depth + "]" * depth)
    return f'{{"symbol":"BTCUSDT","topic":"trade","params":{{}},"data":[{item}]}}'


# Every depth up to past the recursion limit: where json.loads still copes but
# writing the value back as JSON (`extra`) does not is a window a few levels wide,
# and where it lies depends on how deep the caller's stack already is.
DEPTHS = [*range(1, 1100), 1500, 5000, 100_000]


@pytest.mark.parametrize("stack", [0, 900], ids=["shallow", "deep-stack"])
def test_every_nesting_depth_is_written_or_dead_lettered(stack: int) -> None:
    """``stack`` extra frames stand for a caller already deep in its stack."""
    pipe, sink = pipeline()
    outcome: list[BaseException] = []

    def run(levels: int) -> None:
        if levels:
            run(levels - 1)
            return
        try:
            for depth in DEPTHS:
                event = frames.decode(nested_trade(depth), "v1", STAMP)
                if isinstance(event, Undecodable):
                    sink.dead.append((event.raw, event.reason))
                    continue
                pipe.handle(event)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, args=(stack,))
    thread.start()
    thread.join()
    assert outcome == []
    assert len(sink.sent) + len(sink.dead) == len(DEPTHS)
    assert {reason for _, reason in sink.dead} <= {"invalid_json", "mapping_failed"}
    assert any(reason == "invalid_json" for _, reason in sink.dead)


def test_unknown_private_events_count_under_one_label() -> None:
    pipe, sink = pipeline()
    for i in range(500):
        event = frames.decode(json.dumps([{"e": f"weird{i}", "E": 1}]), "private", STAMP)
        pipe.handle(event)
    assert sink.sent == []
    values = {s.labels["topic"] for m in REGISTRY.collect()
              if m.name == "bybit_connector_unrouted_events" for s in m.samples
              if s.labels.get("stream") == "private"}
    assert not any(v.startswith("weird") for v in values)
    assert REGISTRY.get_sample_value("bybit_connector_unrouted_events_total",
                                     {"stream": "private", "topic": metrics.UNKNOWN}) >= 500


def test_unknown_market_topics_count_under_one_label() -> None:
    pipe, sink = pipeline()
    for i in range(500):
        pipe.handle(frames.decode(json.dumps({"symbol": "BTCUSDT", "topic": f"t{i}",
                                              "data": [{}]}), "v1", STAMP))
    assert sink.sent == []
    values = {s.labels["topic"] for m in REGISTRY.collect()
              if m.name == "bybit_connector_unrouted_events" for s in m.samples}
    assert not any(v.startswith("t") and v[1:].isdigit() for v in values)


