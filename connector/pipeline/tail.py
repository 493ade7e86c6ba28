"""Reading back what the connector wrote: a topic's tail, and a value decoded.

``replay`` must know which records a typed topic already holds before it
writes (so a replay never duplicates), and must read archive and dead-letter
records. Both read the last records of each partition and decode values in the
format the connector writes (plain Avro, or Confluent framing).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import fastavro
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


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


def read_tail(consumer: KafkaConsumer, topic: str, tail: int,
              deadline: float) -> Iterator[Any]:
    """The last ``tail`` records of each partition of ``topic`` (Kafka's
    ``ConsumerRecord``), partition by partition in offset order, until each
    partition's end as it was on entry or ``deadline`` (``time.monotonic``).
    Yields nothing for a topic that cannot be read (logged). ``replay`` reads
    what is already present through it."""
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
