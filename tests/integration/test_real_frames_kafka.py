"""Private frames in the shapes the live exchange sends land in Kafka, none lost.

The frames of ``tests/samples/v5/real/`` (a classic wallet without
``locked``, a wallet without ``accountType``, spot orders and fills,
``execution.fast``), each with an envelope key no field names added, go
through the connector's own decoder and pipeline into a real broker with
both Kafka clients: every row is a record (none dead-lettered), each reads
back equal to what the mapper produced, the added envelope key in
``frame_extra``, and each missing expected field counted.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connector.bybit.events import Stamp, V5Data
from connector.bybit.v5.frames import decode
from connector.config.model import KafkaConfig
from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.pipeline.core import V5_DEDUP_FIELDS, Pipeline, Route
from connector.records import MAPPERS, load_schema
from connector.serde.serializers import PlainAvroSerializer
from connector.sink.kafka_sink import KafkaSink

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "samples" / "v5" / "real"
FRAMES = {"execution.spot": ["execution_spot.json"],
          "order.spot": ["order_spot_partially_filled_canceled.json", "order_spot_filled.json"],
          "wallet": ["wallet_unified.json", "wallet_classic_contract.json",
                     "wallet_no_account_type.json"],
          "execution.fast": ["execution_fast.json", "execution_fast_envelope_id.json"]}
KINDS = {"execution.spot": "v5_execution", "order.spot": "v5_order", "wallet": "v5_wallet",
         "execution.fast": "v5_execution_fast"}
METRIC = "bybit_connector_record_fields_missing_total"


def plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def missing(kind: str, field: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"topic_kind": kind, "field": field}) or 0.0


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_real_private_frames_land_in_kafka_without_loss(kafka_broker: KafkaBroker,
                                                        client: str) -> None:
    prefix = f"real.{client}.{uuid.uuid4().hex[:8]}"
    dead = f"{prefix}.dead-letter"
    routes = {("v5-private", topic): Route(
        stream="v5-private", topic_id=topic, kind=kind, kafka_topic=f"{prefix}.{topic}",
        mapper=MAPPERS[kind], serializer=PlainAvroSerializer(load_schema(kind)),
        headers=[], dedup_field=V5_DEDUP_FIELDS.get(topic)) for topic, kind in KINDS.items()}
    sink = KafkaSink(KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers],
                                 client=client,  # type: ignore[arg-type]
                                 dead_letter_topic=dead))
    pipeline = Pipeline(routes, sink)
    expected: dict[str, list[dict[str, Any]]] = {topic: [] for topic in KINDS}
    before = (missing("v5_wallet", "coins.locked"), missing("v5_wallet", "account_type"))
    try:
        for topic, names in FRAMES.items():
            for name in names:
                raw = json.loads((REAL / name).read_text())
                raw["xEnvelope"] = {"added": True}  # Bybit adds envelope keys over time
                stamp = Stamp(int(time.time() * 1000), time.monotonic_ns())
                event = decode(json.dumps(raw), "v5-private", stamp)
                assert isinstance(event, V5Data), event
                expected[topic] += MAPPERS[KINDS[topic]](event)
                pipeline.handle(event)
        assert sink.flush(60) == 0
    finally:
        sink.close(30)
    got = read_all(kafka_broker.bootstrap_servers,
                   [dead, *(route.kafka_topic for route in routes.values())], timeout=30)
    assert got[dead] == [], "nothing dead-lettered"
    decoder = AvroDecoder()
    for topic, kind in KINDS.items():
        records = [plain(decoder.decode(kind, m)) for m in got[f"{prefix}.{topic}"]]
        assert records == expected[topic], topic
        assert all(r["frame_extra"] == {"xEnvelope": '{"added": true}'} for r in records)
    assert len(expected["wallet"]) == 3 and len(expected["order.spot"]) == 2
    # the classic wallet's coin row has no `locked`; one wallet has no accountType
    after = (missing("v5_wallet", "coins.locked"), missing("v5_wallet", "account_type"))
    assert after[0] - before[0] >= 3 and after[1] - before[1] >= 1
