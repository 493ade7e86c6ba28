"""Read back what the connector wrote: the ``consume`` command, the demo, tests, benchmarks.

``RecordReader`` + ``follow`` back ``bybit-kafka-connector consume``: any topic
the connector writes, both formats, dead letters included, as JSON lines.
``read_all`` + ``AvroDecoder`` are the tests' and benchmark's bulk readers:
plain-Avro values with the ``.avsc`` from ``avro/`` (checking the fingerprint
header) and Confluent-framed values by stripping the 5-byte prefix (the
registry path is also checked with Confluent's own deserializer in the tests).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import json
import logging
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
from kafka import KafkaConsumer, TopicPartition

from connector import records
from connector.errors import DeliveryError, KafkaAccessError
from connector.serde.serializers import FINGERPRINT_HEADER, PlainAvroSerializer


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


# -- the `consume` command: any topic the connector writes, as JSON lines -------------------

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
DEAD_LETTER_HEADER = "dlq.reason"


def schemas_by_fingerprint() -> dict[str, dict[str, Any]]:
    """Every packaged ``avro/*.avsc`` by the fingerprint the connector writes in the
    ``avro.schema.fingerprint`` header (see ``serde``)."""
    out = {}
    for path in sorted(records.schema_dir().glob("*.avsc")):
        schema = records.load_schema(path.stem)
        out[PlainAvroSerializer(schema).fingerprint] = schema
    return out


class RecordReader:
    """Decodes one Kafka message written by the connector into a JSON-ready dict.

    Plain Avro: the schema is the packaged ``.avsc`` whose fingerprint the
    header names. Confluent framing (``0x00`` + 4-byte big-endian id): the
    schema is fetched once per id from the registry (``GET /schemas/ids/<id>``).
    A dead letter (header ``dlq.reason``) is shown as its headers and raw bytes.
    A message it cannot decode raises ``ValueError`` naming why.
    """

    def __init__(self, registry_url: str | None = None, username: str | None = None,
                 password: str | None = None, timeout: float = 10.0) -> None:
        self._by_fingerprint = schemas_by_fingerprint()
        self._parsed: dict[str, Any] = {}
        self._registry = registry_url.rstrip("/") if registry_url else None
        self._auth = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"
        self._timeout = timeout

    def read(self, message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {"topic": message.topic, "partition": message.partition,
                               "offset": message.offset, "timestamp": message.timestamp_ms,
                               "key": _text(message.key) if message.key is not None else None,
                               "headers": {k: _text(v) for k, v in message.headers.items()}}
        if DEAD_LETTER_HEADER in message.headers:
            out["dead_letter"] = True
            out["raw"] = _text(message.value)
            return out
        out["value"] = _plain(self._decode(message))
        return out

    def _decode(self, message: Message) -> dict[str, Any]:
        value = message.value
        fp = message.headers.get(FINGERPRINT_HEADER)
        if fp is not None:
            schema = self._schema(f"fp:{fp.decode()}", lambda: self._by_fingerprint.get(
                fp.decode()))
            if schema is None:
                raise ValueError(f"no packaged schema has fingerprint {fp.decode()} (a record "
                                 "of another connector version?)")
        elif value[:1] == b"\x00" and len(value) >= 5:
            schema_id = struct.unpack(">I", value[1:5])[0]
            schema = self._schema(f"id:{schema_id}", lambda: self._fetch(schema_id))
            value = value[5:]
        else:
            raise ValueError("neither an avro.schema.fingerprint header nor Confluent framing")
        result: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(value), schema)  # type: ignore[assignment]
        return result

    def _schema(self, key: str, load: Callable[[], dict[str, Any] | None]) -> Any:
        if key not in self._parsed:
            schema = load()
            self._parsed[key] = None if schema is None else fastavro.parse_schema(schema)
        return self._parsed[key]

    def _fetch(self, schema_id: int) -> dict[str, Any]:
        if self._registry is None:
            raise ValueError(f"Confluent-framed value (schema id {schema_id}) and no schema "
                             "registry configured")
        request = urllib.request.Request(f"{self._registry}/schemas/ids/{schema_id}")
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ValueError(f"schema id {schema_id}: registry {self._registry}: {exc}") from exc
        schema: dict[str, Any] = json.loads(body["schema"])
        return schema


def _text(data: bytes) -> str | dict[str, str]:
    """UTF-8 text as is; other bytes as ``{"base64": ...}``."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def _plain(value: Any) -> Any:
    """timestamp-millis values back to epoch milliseconds (as Bybit sent them);
    bytes (the archive's ``frame``) as text, or base64 if they are not UTF-8."""
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def follow(consumer_settings: dict[str, Any], topic: str, from_beginning: bool,
           idle_timeout: float | None = None) -> Iterator[Message]:
    """Messages of every partition of ``topic``, from the start or from now on.

    Blocks; ends after ``idle_timeout`` seconds without a message (never if None).
    Raises ``ValueError`` if the topic does not exist.
    """
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, **consumer_settings)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        last = time.monotonic()
        while idle_timeout is None or time.monotonic() - last < idle_timeout:
            batch = consumer.poll(timeout_ms=200)
            for msgs in batch.values():
                for m in msgs:
                    last = time.monotonic()
                    yield Message(m.topic, m.partition, m.offset, m.key, m.value,
                                  {k: v for k, v in (m.headers or [])}, m.timestamp)
    finally:
        consumer.close()


MAX_MESSAGES_IDLE_SECONDS = 5.0  # --max-messages without --timeout: a quiet topic ends it
BOOTSTRAP_SECONDS = 5.0  # no broker answering within this: one error line, exit 1


def run_consume(topic: str, bootstrap_servers: list[str] | None, config_path: str | None,
                from_beginning: bool, max_messages: int | None, idle_timeout: float | None,
                out: Any) -> int:
    """The ``consume`` command: print each message of ``topic`` as one JSON line on ``out``.

    Kafka connection, security and the schema registry come from the config
    file when one is given (``bootstrap_servers`` overrides its brokers). A
    message that cannot be decoded is printed with ``error`` and its raw
    bytes, and reading goes on. With ``max_messages`` and no ``idle_timeout``
    it stops after ``MAX_MESSAGES_IDLE_SECONDS`` without a message (saying how
    many it got), so a quiet topic cannot hold it for ever. Kafka's client logs
    nothing: a broker that cannot be reached is one error line within
    ``BOOTSTRAP_SECONDS``. Returns the exit code; raises ``ConfigError``.
    """
    from kafka.errors import KafkaError

    client_log = logging.getLogger("kafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # its retries would repeat our one error line
    try:
        return _consume(topic, bootstrap_servers, config_path, from_beginning, max_messages,
                        idle_timeout, out)
    except (KafkaError, ValueError, DeliveryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client_log.setLevel(level)


def _consume(topic: str, bootstrap_servers: list[str] | None, config_path: str | None,
             from_beginning: bool, max_messages: int | None, idle_timeout: float | None,
             out: Any) -> int:
    from connector.config.load import load
    from connector.sink.admin import tcp_probe
    from connector.sink.kafka_sink import producer_settings
    from connector.sink.probe import probe

    settings: dict[str, Any] = {"bootstrap_servers": bootstrap_servers or ["localhost:9092"]}
    reader = RecordReader()
    if config_path is not None:
        config = load(config_path)
        settings = {k: v for k, v in producer_settings(config.kafka).items()
                    if k in KafkaConsumer.DEFAULT_CONFIG and k != "partitioner"}
        if bootstrap_servers:
            settings["bootstrap_servers"] = bootstrap_servers
        registry = config.serialization.schema_registry
        reader = RecordReader(registry.url, registry.username,
                              registry.password.get() if registry.password else None)
    servers = settings["bootstrap_servers"]
    try:
        if config_path is not None:  # security settings too: a refusal names its cause
            probe(dataclasses.replace(config.kafka, bootstrap_servers=list(servers)),
                  BOOTSTRAP_SECONDS)
        else:
            tcp_probe(servers, BOOTSTRAP_SECONDS)
    except KafkaAccessError:
        raise
    except DeliveryError as exc:
        raise DeliveryError(f"Kafka at {','.join(servers)} not reachable ({exc})") from exc
    settings.setdefault("bootstrap_timeout_ms", int(BOOTSTRAP_SECONDS * 1000))
    if max_messages is not None and idle_timeout is None:
        idle_timeout = MAX_MESSAGES_IDLE_SECONDS
    count = 0
    for message in follow(settings, topic, from_beginning, idle_timeout):
        try:
            line = reader.read(message)
        except ValueError as exc:
            line = {"topic": message.topic, "partition": message.partition,
                    "offset": message.offset, "error": str(exc),
                    "raw": {"base64": base64.b64encode(message.value).decode()}}
        print(json.dumps(line, ensure_ascii=False), file=out, flush=True)
        count += 1
        if max_messages is not None and count >= max_messages:
            return 0
    if max_messages is not None:
        print(f"consume: {count} of {max_messages} messages; none for {idle_timeout:g} s",
              file=sys.stderr)
    return 0
