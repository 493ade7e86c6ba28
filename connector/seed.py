"""Seed the replay de-duplication memory from what Kafka already holds.

De-duplication (``Pipeline._first_time``) remembers the last ids written per
(route, symbol) in memory, so after a restart, crashed or graceful, the
replay Bybit sends on the first subscribe would be written a second time. At
start, before any connection opens, the connector reads the tail of every
de-duplicated Kafka topic (the last ``DEDUP_CAPACITY`` records per symbol of
each partition), decodes each value with the configured format (plain Avro
or Confluent framing) and adds ``Route.dedup_field`` to the route's memory
keyed by ``record["symbol"]``, exactly as the pipeline keys it. Generic over
every route that has a ``dedup_field``.

Best effort by design: a record that does not decode with the current schema
is skipped (it cannot be a replay of what this version writes), and a topic
that cannot be read within the timeout starts with an empty memory (logged).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import fastavro
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from connector import records
from connector.config import Config
from connector.dedup import RecentIds
from connector.pipeline import DEDUP_CAPACITY, Route
from connector.sink import producer_settings

log = logging.getLogger(__name__)

MAX_TAIL = 500_000  # records per partition, whatever the symbol count


def decode_value(value: bytes, parsed_schema: Any, confluent: bool) -> dict[str, Any] | None:
    """One record value as the connector wrote it, or None if it does not decode."""
    if confluent:
        if value[:1] != b"\x00" or len(value) < 5:
            return None
        value = value[5:]
    try:
        out = fastavro.schemaless_reader(io.BytesIO(value), parsed_schema)
    except (ValueError, EOFError, IndexError, TypeError, UnicodeDecodeError, StopIteration):
        return None
    return out if isinstance(out, dict) else None


def _symbols_per_route(config: Config) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sub in config.subscriptions:
        topic = config.kafka_topic(sub)
        counts[topic] = counts.get(topic, 0) + max(1, len(sub.symbols))
    return counts


def seed_dedup(config: Config, routes: Mapping[tuple[str, str], Route],
               timeout: float = 30.0) -> int:
    """Fill each de-duplicating route's memory from its topic's tail; returns ids added."""
    targets = {r.kafka_topic: r for r in routes.values() if r.dedup_field is not None}
    if not targets:
        return 0
    settings = {k: v for k, v in producer_settings(config.kafka).items()
                if k in KafkaConsumer.DEFAULT_CONFIG}
    settings.update(group_id=None, enable_auto_commit=False,
                    client_id="bybit-kafka-connector-seed")
    confluent = config.serialization.format == "confluent"
    symbols = _symbols_per_route(config)
    started = time.monotonic()
    consumer = KafkaConsumer(**settings)
    try:
        total = 0
        for topic, route in targets.items():
            tail = min(MAX_TAIL, DEDUP_CAPACITY * symbols.get(topic, 1))
            added = _seed_topic(consumer, route, tail, confluent,
                                deadline=started + timeout)
            total += added
            log.info("de-duplication: %d %s ids from the tail of %s", added,
                     route.dedup_field, topic)
        return total
    finally:
        consumer.close()


def read_tail(consumer: KafkaConsumer, topic: str, tail: int,
              deadline: float) -> Iterator[Any]:
    """The last ``tail`` records of each partition of ``topic`` (Kafka's
    ``ConsumerRecord``), partition by partition in offset order, until each
    partition's end as it was on entry or ``deadline`` (``time.monotonic``).
    Yields nothing for a topic that cannot be read (logged). The one tail
    reader: start-up seeding and ``replay``'s "already present" both use it."""
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        end = consumer.end_offsets(tps)
        begin = consumer.beginning_offsets(tps)
    except KafkaError as exc:
        log.warning("cannot read the tail of %s (%s)", topic, exc)
        return
    todo = {tp for tp in tps if end[tp] > begin[tp]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, max(begin[tp], end[tp] - tail))
    while todo and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500, max_records=10_000)
        for tp, messages in batch.items():
            for m in messages:
                if m.offset + 1 >= end[tp]:
                    todo.discard(tp)
                if m.offset >= end[tp] or m.value is None:
                    continue
                yield m
            if consumer.position(tp) >= end[tp]:
                todo.discard(tp)
    if todo:
        log.warning("%s not read to its end within the timeout", topic)
    consumer.unsubscribe()


def _seed_topic(consumer: KafkaConsumer, route: Route, tail: int, confluent: bool,
                deadline: float) -> int:
    parsed = fastavro.parse_schema(records.load_schema(route.kind))
    field = route.dedup_field
    assert field is not None
    added = 0
    for m in read_tail(consumer, route.kafka_topic, tail, deadline):
        rec = decode_value(m.value, parsed, confluent)
        if rec is None or rec.get(field) is None:
            continue
        symbol = rec.get("symbol", "")
        seen = route.dedup.get(symbol)
        if seen is None:
            seen = route.dedup.setdefault(symbol, RecentIds(DEDUP_CAPACITY))
        added += seen.add(rec[field])
    return added
