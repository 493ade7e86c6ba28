"""Read back what the connector wrote: for the demo, tests and benchmarks.

Decodes plain-Avro values with the ``.avsc`` from ``avro/`` (checking the
fingerprint header) and Confluent-framed values by stripping the 5-byte
prefix (the registry path is also checked with Confluent's own deserializer
in the tests).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import fastavro
from kafka import KafkaConsumer, TopicPartition

from connector import records
from connector.serde import FINGERPRINT_HEADER, PlainAvroSerializer


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp_ms: int


def read_all(bootstrap_servers: str | list[str], topics: list[str],
             timeout: float = 10.0, idle: float = 1.0) -> dict[str, list[Message]]:
    """Every message currently in ``topics`` (from the beginning).

    Stops when every partition has been read up to the end offset taken at
    the start, or after ``timeout`` seconds.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             consumer_timeout_ms=int(idle * 1000), group_id=None)
    try:
        partitions = []
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or set():
                partitions.append(TopicPartition(topic, p))
        out: dict[str, list[Message]] = {t: [] for t in topics}
        if not partitions:
            return out
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        done = {tp for tp in partitions if end[tp] == 0}
        while len(done) < len(partitions) and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200, max_records=5000)
            for tp, msgs in batch.items():
                for m in msgs:
                    out[tp.topic].append(Message(
                        m.topic, m.partition, m.offset, m.key, m.value,
                        {k: v for k, v in (m.headers or [])}, m.timestamp))
                    if m.offset + 1 >= end[tp]:
                        done.add(tp)
        return out
    finally:
        consumer.close()


class AvroDecoder:
    """Decodes plain-Avro values written by the connector, by record kind."""

    def __init__(self) -> None:
        self._schemas: dict[str, Any] = {}
        self._fingerprints: dict[str, str] = {}

    def _schema(self, kind: str) -> Any:
        if kind not in self._schemas:
            schema = records.load_schema(kind)
            self._schemas[kind] = fastavro.parse_schema(schema)
            self._fingerprints[kind] = PlainAvroSerializer(schema).fingerprint
        return self._schemas[kind]

    def decode(self, kind: str, message: Message) -> dict[str, Any]:
        schema = self._schema(kind)
        value = message.value
        fp = message.headers.get(FINGERPRINT_HEADER)
        if fp is not None and fp.decode() != self._fingerprints[kind]:
            raise ValueError(f"{message.topic}@{message.offset}: fingerprint {fp!r} is not "
                             f"that of {kind}")
        if fp is None and value[:1] == b"\x00":  # Confluent framing
            value = value[5:]
        result: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(value), schema)  # type: ignore[assignment]
        return result
