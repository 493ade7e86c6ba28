"""What a replica does before it streams a shard it was just given: remember
the trades already in Kafka, so Bybit's replay on subscribe is not written twice.

Bybit's v1 ``trade`` topic replays the last 60 trades on every subscribe. The
replica that streamed a shard before wrote those trades; the new owner has
never seen them. ``seed_trade_dedup`` reads the tail of each trade topic the
new subscriptions write to, decodes the trade ids of their symbols and adds
them to the pipeline's de-duplication memory (``Route.dedup``), before the
connections start. It is the default ``on_shards_assigned`` hook of
``connector.coordination``; a replica starting up can use it the same way.

Bounded: at most ``per_symbol`` records per configured symbol of the topic are
read back per partition (the replay is 60), within ``timeout`` seconds. On a
Kafka error it logs and returns: a failed seed costs duplicates, never data.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import fastavro
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from connector import records
from connector.config import Config, SubscriptionConfig
from connector.dedup import RecentIds
from connector.pipeline import DEDUP_CAPACITY, Route
from connector.sink import producer_settings

log = logging.getLogger(__name__)

REPLAY_DEPTH = 100  # records read back per symbol; Bybit replays 60 trades


def seed_trade_dedup(config: Config, routes: Mapping[tuple[str, str], Route],
                     subscriptions: Sequence[SubscriptionConfig], per_symbol: int = REPLAY_DEPTH,
                     timeout: float = 5.0) -> int:
    """Seed ``routes``' trade de-dup for ``subscriptions`` from Kafka. Returns ids seeded."""
    wanted: dict[str, tuple[Route, set[str]]] = {}  # kafka topic -> (route, symbols)
    for sub in subscriptions:
        route = routes.get((sub.stream, sub.topic_id))
        if route is None or route.dedup_field is None:
            continue
        wanted.setdefault(route.kafka_topic, (route, set()))[1].update(sub.symbols)
    if not wanted:
        return 0
    symbols_per_topic = {config.kafka_topic(s): 0 for s in config.subscriptions}
    for sub in config.subscriptions:
        symbols_per_topic[config.kafka_topic(sub)] += len(sub.symbols)
    settings = {k: v for k, v in producer_settings(config.kafka).items()
                if k in KafkaConsumer.DEFAULT_CONFIG and k != "client_id"}
    started = time.monotonic()
    seeded = 0
    try:
        consumer = KafkaConsumer(**settings, group_id=None, enable_auto_commit=False,
                                 client_id="bybit-kafka-connector-seed")
    except KafkaError as exc:
        log.warning("cannot seed trade de-duplication from Kafka (%s); a replay may be "
                    "written twice", exc)
        return 0
    try:
        for topic, (route, symbols) in wanted.items():
            depth = per_symbol * max(1, symbols_per_topic.get(topic, 1))
            deadline = started + timeout
            seeded += _seed_topic(consumer, topic, route, symbols, depth, deadline,
                                  config.serialization.format)
    except KafkaError as exc:
        log.warning("seeding trade de-duplication failed (%s); a replay may be written "
                    "twice", exc)
    finally:
        consumer.close()
    log.info("seeded %d trade ids for %d symbols in %.2f s", seeded,
             sum(len(s) for _, s in wanted.values()), time.monotonic() - started)
    return seeded


def _seed_topic(consumer: KafkaConsumer, topic: str, route: Route, symbols: set[str],
                depth: int, deadline: float, fmt: str) -> int:
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    if not parts:
        return 0
    consumer.assign(parts)
    end = consumer.end_offsets(parts)
    begin = consumer.beginning_offsets(parts)
    todo = {tp for tp in parts if end[tp] > begin[tp]}
    for tp in todo:
        consumer.seek(tp, max(begin[tp], end[tp] - depth))
    decode = _decoder(route.kind, fmt)
    field = route.dedup_field
    assert field is not None
    keys = {s.encode(): s for s in symbols}
    seeded = 0
    while todo and time.monotonic() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=200, max_records=5000).items():
            for m in msgs:
                if m.offset + 1 >= end[tp]:
                    todo.discard(tp)
                symbol = keys.get(m.key or b"")
                if symbol is None or m.offset >= end[tp]:
                    continue
                try:
                    trade_id = decode(m.value)[field]
                except (ValueError, KeyError, TypeError, EOFError, IndexError):
                    continue  # not ours to judge here; the reader of the topic will
                seen = route.dedup.get(symbol)
                if seen is None:
                    seen = route.dedup.setdefault(symbol, RecentIds(DEDUP_CAPACITY))
                seen.add(str(trade_id))
                seeded += 1
    if todo:
        log.warning("seeding %s: not finished within the time allowed", topic)
    return seeded


def _decoder(kind: str, fmt: str) -> Callable[[bytes], dict[str, Any]]:
    schema = fastavro.parse_schema(records.load_schema(kind))
    skip = 5 if fmt == "confluent" else 0  # magic byte + schema id

    def decode(value: bytes) -> dict[str, Any]:
        out = fastavro.schemaless_reader(io.BytesIO(value[skip:]), schema, None)
        assert isinstance(out, dict)
        return out

    return decode
