"""The YAML configuration: dataclasses, defaults, strict validation, secrets.

The dataclasses below are the single specification of the config file. Each
field carries its documentation (``doc``), an optional ``example`` and a
``secret`` flag in its metadata; the JSON Schema (``config.schema.json``) and
the README table are generated from them (see ``connector.config.schema``).

Every error names the YAML path at fault, e.g.
``subscriptions[3].interval: '2m' is not one of 1m, 3m, ...``.
Secrets are never required inline: any string may be ``${ENV_VAR}`` (or
``${ENV_VAR:-default}``), and every secret has a ``<name>_file`` twin that
reads it from a mounted file.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from connector.bybit import topics
from connector.config.kafka_keys import (
    TOPIC_CONFIG_KEYS,
    allowed_settings,
    unknown_settings,
)
from connector.config.limits import (
    MAX_CONFIG_BYTES,
    MAX_SECONDS,
    MAX_SECRET_FILE_BYTES,
    PORT_MAX,
    check_expanded_size,
    check_range,
    read_limited,
)
from connector.errors import ConfigError


class Secret:
    """A string that never shows itself in ``repr``/``str``/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def doc(text: str, *, example: Any = None, secret: bool = False, key: str | None = None,
        minimum: float | None = None, maximum: float | None = None) -> dict[str, Any]:
    """Field metadata: its documentation, an example, whether it is secret, its YAML
    key where that is no Python name (``v5-private``), and the range a number must lie
    in (checked at load time, published in the JSON Schema)."""
    meta: dict[str, Any] = {"doc": text, "secret": secret}
    if example is not None:
        meta["example"] = example
    if key is not None:
        meta["key"] = key
    if minimum is not None:
        meta["minimum"] = minimum
    if maximum is not None:
        meta["maximum"] = maximum
    return meta


def yaml_key(f: dataclasses.Field[Any]) -> str:
    """The YAML key of a dataclass field."""
    return str(f.metadata.get("key", f.name))


SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")
KAFKA_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

@dataclass(frozen=True)
class StreamUrls:
    v1: str | None = field(default=None, metadata=doc(
        "Full URL of the public v1 stream; overrides `network`.",
        example="ws://127.0.0.1:8765/spot/quote/ws/v1"))
    v2: str | None = field(default=None, metadata=doc(
        "Full URL of the public v2 stream; overrides `network`.",
        example="ws://127.0.0.1:8765/spot/quote/ws/v2"))
    private: str | None = field(default=None, metadata=doc(
        "Full URL of the private stream; overrides `network`.",
        example="ws://127.0.0.1:8765/spot/ws"))
    v5: str | None = field(default=None, metadata=doc(
        "Full URL of the v5 public spot stream; overrides `network` (regional hosts, "
        "a local exchange or a proxy).", example="wss://stream.bybit.kz/v5/public/spot"))
    v5_private: str | None = field(default=None, metadata=doc(
        "Full URL of the v5 private stream; overrides `network`.",
        example="wss://stream.bybit.kz/v5/private", key="v5-private"))

    def for_stream(self, stream: str) -> str | None:
        """The URL configured for a stream name (``v5-private`` → ``v5_private``)."""
        value: str | None = getattr(self, stream.replace("-", "_"))
        return value


@dataclass(frozen=True)
class Credentials:
    api_key: Secret | None = field(default=None, metadata=doc(
        "Bybit API key (only for private topics). Use `${ENV_VAR}` or `api_key_file`.",
        example="${BYBIT_API_KEY}", secret=True))
    api_secret: Secret | None = field(default=None, metadata=doc(
        "Bybit API secret. Use `${ENV_VAR}` or `api_secret_file`.",
        example="${BYBIT_API_SECRET}", secret=True))


@dataclass(frozen=True)
class BybitConfig:
    network: Literal["mainnet", "testnet"] = field(default="mainnet", metadata=doc(
        "Which Bybit environment to connect to."))
    urls: StreamUrls = field(default_factory=StreamUrls, metadata=doc(
        "Explicit endpoint per stream (for a local exchange or a proxy)."))
    credentials: Credentials = field(default_factory=Credentials, metadata=doc(
        "API credentials, required only when a private topic is subscribed (the same "
        "credentials serve `private` and `v5-private`)."))
    ping_interval_seconds: float = field(default=20.0, metadata=doc(
        "How often to send `{\"ping\"}`; Bybit asks for 20 s.", maximum=MAX_SECONDS))
    pong_timeout_seconds: float = field(default=10.0, metadata=doc(
        "A ping without pong, and no other frame read either, for this long recycles the "
        "connection. Any frame read proves the connection alive, so a connector reading "
        "behind its socket is not disconnected for it.", maximum=MAX_SECONDS))
    ack_timeout_seconds: float = field(default=10.0, metadata=doc(
        "A subscribe without acknowledgement for this long is reported and retried.",
        maximum=MAX_SECONDS))
    auth_timeout_seconds: float = field(default=10.0, metadata=doc(
        "How long to wait for the private stream's auth answer.", maximum=MAX_SECONDS))
    connect_timeout_seconds: float = field(default=10.0, metadata=doc(
        "TCP + TLS + WebSocket handshake timeout.", maximum=MAX_SECONDS))
    reconnect_max_delay_seconds: float = field(default=30.0, metadata=doc(
        "Cap of the exponential reconnect backoff (first retry is immediate).",
        maximum=MAX_SECONDS))
    max_subscriptions_per_connection: int = field(default=200, metadata=doc(
        "Topic x symbol pairs one connection carries before another is opened (v5 public "
        "also opens another before 21,000 characters of args, Bybit's cap).", minimum=1))
    max_symbols_per_request: int = field(default=20, metadata=doc(
        "v1 subscribes symbols as comma-separated lists of at most this many.", minimum=1))
    max_frame_bytes: int = field(default=8 * 1024 * 1024, metadata=doc(
        "Largest WebSocket message (and decompressed binary frame) accepted, in bytes. "
        "Larger ones are read through without being kept, counted as undecodable "
        "(`frame_too_large`) and dead-lettered by reference (size and first 1 KiB). Real "
        "Bybit frames are far smaller (a 1,000-level book is about 60 KB).",
        minimum=4096, maximum=1024 * 1024 * 1024))


@dataclass(frozen=True)
class KafkaSecurity:
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = field(
        default="PLAINTEXT", metadata=doc("Protocol used to talk to the brokers."))
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = (
        field(default=None, metadata=doc(
            "SASL mechanism, with SASL_* protocols. (OAUTHBEARER is not supported: it needs "
            "a token provider, which the connector does not have.)")))
    sasl_plain_username: str | None = field(default=None, metadata=doc(
        "SASL username (PLAIN and SCRAM)."))
    sasl_plain_password: Secret | None = field(default=None, metadata=doc(
        "SASL password. Use `${ENV_VAR}` or `sasl_plain_password_file`.", secret=True))
    ssl_cafile: str | None = field(default=None, metadata=doc("CA bundle (PEM) path."))
    ssl_certfile: str | None = field(default=None, metadata=doc("Client certificate (PEM)."))
    ssl_keyfile: str | None = field(default=None, metadata=doc("Client private key (PEM)."))
    ssl_password: Secret | None = field(default=None, metadata=doc(
        "Password of the client key.", secret=True))
    ssl_check_hostname: bool = field(default=True, metadata=doc(
        "Verify the broker certificate's host name."))


@dataclass(frozen=True)
class TopicCreationConfig:
    """How a missing topic is created (Kafka Connect's ``topic.creation.default.*``).

    Unset values leave the choice to the broker (``num.partitions``,
    ``default.replication.factor``, its topic defaults), which on most clusters
    means one replica: a broker lost is then data lost.
    """

    partitions: int | None = field(default=None, metadata=doc(
        "Partitions of each topic the connector creates (unset: the broker's "
        "`num.partitions`).", example=6, minimum=1, maximum=100_000))
    replication_factor: int | None = field(default=None, metadata=doc(
        "Replicas of each partition (unset: the broker's `default.replication.factor`). "
        "Production clusters: 3.", example=3, minimum=1, maximum=32_767))
    configs: dict[str, Any] = field(default_factory=dict, metadata=doc(
        "Topic-level settings under Kafka's names (`min.insync.replicas`, `retention.ms`, "
        "`cleanup.policy`, ...). With `acks=all` (the default), replication factor 3 and "
        "`min.insync.replicas: 2`, every acknowledged record is on two brokers at least.",
        example={"min.insync.replicas": 2}))


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: list[str] = field(default_factory=lambda: ["localhost:9092"], metadata=doc(
        "Brokers to bootstrap from (`host:port`).", example=["kafka-0.kafka:9092"]))
    client: Literal["kafka-python", "confluent-kafka"] = field(default="kafka-python", metadata=doc(
        "Kafka client library. `kafka-python` (pure Python, always installed) or "
        "`confluent-kafka` (librdkafka, several times less CPU per record; install the "
        "`confluent` extra: `pip install 'bybit-kafka-connector[confluent]'`). "
        "`producer` takes the chosen library's setting names."))
    topic_template: str = field(default="bybit.spot.{stream}.{topic}", metadata=doc(
        "Default Kafka topic of a subscription. `{stream}` is v5/v5-private (legacy "
        "v1/v2/private); `{topic}` is the Bybit topic with its parameter (`orderbook.50`, "
        "`kline.1`, `publicTrade`; legacy `trade`, `kline_1m`, `mergedDepth_1`)."))
    dead_letter_topic: str = field(default="bybit.spot.dead-letter", metadata=doc(
        "Where undecodable frames and unserializable records go, with the reason in headers."))
    producer: dict[str, Any] = field(default_factory=dict, metadata=doc(
        "Producer settings under the chosen client's names: kafka-python's (acks, "
        "compression_type, linger_ms, batch_size, ...) or librdkafka's (acks, "
        "compression.type, linger.ms, ...). Defaults: acks=all, idempotence on, lz4, and no "
        "delivery deadline (kafka-python `delivery_timeout_ms` 2147483647, librdkafka "
        "`message.timeout.ms` 0), as Kafka Connect: records wait out a broker outage and "
        "only `max_pending_records` bounds them. Set a deadline to dead-letter records "
        "older than it instead.",
        example={"linger_ms": 20, "compression_type": "gzip"}))
    headers: Literal["full", "minimal"] = field(default="full", metadata=doc(
        "Record headers. `full`: `bybit.stream`, `bybit.topic`, `bybit.received_ms` and the "
        "schema header. `minimal`: only what a reader needs to decode the value (the "
        "`avro.schema.fingerprint` header in `avro` format, none in `confluent` format); "
        "stream, topic and receive time are fields of every record anyway. Less CPU per "
        "record, mostly with kafka-python. Dead letters always carry their `dlq.*` headers."))
    security: KafkaSecurity = field(default_factory=KafkaSecurity, metadata=doc(
        "SASL/SSL settings under kafka-python's names."))
    create_topics: bool = field(default=True, metadata=doc(
        "Create missing Kafka topics at start (as `topic_creation` says; by default with "
        "the broker's partitions and replication). "
        "Turn off where the connector may not create topics."))
    topic_creation: TopicCreationConfig = field(default_factory=TopicCreationConfig,
                                                metadata=doc(
        "Partitions, replication factor and topic-level settings of the topics the "
        "connector creates (unset: the broker's defaults). Topics that exist are left "
        "as they are."))
    max_pending_records: int = field(default=100_000, metadata=doc(
        "Bound on records handed to the producer and not yet acknowledged.", minimum=1))
    block_timeout_seconds: float = field(default=5.0, metadata=doc(
        "When the bound is reached, wait this long for room, then drop and count.",
        maximum=MAX_SECONDS))
    flush_timeout_seconds: float = field(default=30.0, metadata=doc(
        "On shutdown, how long to wait for Kafka to acknowledge what is pending.",
        maximum=MAX_SECONDS))


@dataclass(frozen=True)
class SchemaRegistryConfig:
    url: str | None = field(default=None, metadata=doc(
        "Confluent-compatible Schema Registry base URL.",
        example="http://schema-registry:8081"))
    username: str | None = field(default=None, metadata=doc("Basic-auth user."))
    password: Secret | None = field(default=None, metadata=doc(
        "Basic-auth password. Use `${ENV_VAR}` or `password_file`.", secret=True))
    auto_register: bool = field(default=True, metadata=doc(
        "Register schemas (subject `<topic>-value`); if false, only look them up."))


@dataclass(frozen=True)
class SerializationConfig:
    format: Literal["confluent", "avro"] = field(default="avro", metadata=doc(
        "`confluent`: magic byte + schema id + Avro, with a schema registry. "
        "`avro`: plain Avro binary, schema fingerprint in a header."))
    schema_registry: SchemaRegistryConfig = field(default_factory=SchemaRegistryConfig,
                                                  metadata=doc("Registry for `confluent`."))


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = field(default=True, metadata=doc("Serve /metrics, /healthz, /readyz."))
    host: str = field(default="0.0.0.0", metadata=doc(
        "Listen address. The default, 0.0.0.0, is every interface: what Prometheus and "
        "Kubernetes probes need in a pod. 127.0.0.1 keeps the endpoints local to the host.",
        example="127.0.0.1"))
    port: int = field(default=9102, metadata=doc(
        "Listen port (0: any free port, for tests).", minimum=0, maximum=PORT_MAX))


GROUP_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
COORDINATION_TOPIC = "bybit.connector.coordination.{group}"


@dataclass(frozen=True)
class CoordinationConfig:
    """Scale-out: replicas with the same `group` share the subscriptions among them.

    Subscriptions are cut into `shards` by a stable hash of (stream, topic, symbol);
    every replica joins a Kafka consumer group on a coordination topic of `shards`
    partitions, and the partitions the group gives a replica are the shards it streams.
    """

    group: str = field(metadata=doc(
        "Kafka consumer group id shared by every replica of this deployment.",
        example="bybit-connector"))
    shards: int = field(default=12, metadata=doc(
        "How many shards the subscriptions are cut into (1..1000): the unit that moves "
        "between replicas. A few times the largest replica count. Changing it needs a new "
        "`group`."))
    topic: str | None = field(default=None, metadata=doc(
        "Coordination topic (created at start with `shards` partitions; it carries no "
        "records). Default: `bybit.connector.coordination.<group>`."))
    session_timeout_seconds: float = field(default=6.0, metadata=doc(
        "A replica that stops heartbeating for this long loses its shards to the others "
        "(Kafka's session timeout; the broker's group.min.session.timeout.ms is 6 s by "
        "default)."))
    heartbeat_interval_seconds: float = field(default=1.0, metadata=doc(
        "How often a replica heartbeats; also how soon it notices a rebalance. At most a "
        "third of `session_timeout_seconds`."))
    standby: int = field(default=0, metadata=doc(
        "Hot standby replicas per shard (0 or 1). With 1, every shard is also streamed, "
        "unwritten, by one other replica that keeps the last seconds in memory; when the "
        "owner dies, it writes what the owner had not written (so a kill -9 loses nothing "
        "the standby received). Doubles the Bybit connections."))
    standby_buffer_seconds: float = field(default=30.0, metadata=doc(
        "How many seconds a standby keeps per shard; at least `session_timeout_seconds` "
        "+ 10 (the crash must be detected and the hand-over overlap waited out)."))
    standby_buffer_bytes: int = field(default=64 * 1024 * 1024, metadata=doc(
        "Upper bound of a standby's memory per shard for frames kept (bytes of raw "
        "frames); the oldest frames go first."))

    @property
    def coordination_topic(self) -> str:
        return self.topic or COORDINATION_TOPIC.format(group=self.group)


@dataclass(frozen=True)
class ArchiveConfig:
    """The raw frame archive: every data frame as received, before mapping.

    Opt-in because it roughly doubles what the connector writes; what it buys is a
    record of what Bybit sent, from which `replay` re-derives the typed topics.
    """

    enabled: bool = field(default=False, metadata=doc(
        "Archive the frames of every subscription (a subscription's own `archive` "
        "overrides this)."))
    topic_template: str = field(default="bybit.raw.{stream}", metadata=doc(
        "Kafka topic of the archive; `{stream}` is v5/v5-private (legacy v1/v2/private). "
        "Records are keyed by Bybit topic and symbol (one partition, in order, per book) "
        "and compressed as the producer's `compression_type` says (lz4 by default)."))

    def topic(self, stream: str) -> str:
        return self.topic_template.format(stream=stream)


@dataclass(frozen=True)
class SubscriptionConfig:
    stream: Literal["v5", "v5-private", "v1", "v2", "private"] = field(metadata=doc(
        "Which Bybit stream the topic lives on. v5 and v5-private are what Bybit serves "
        "today; the legacy v1, v2 and private endpoints went offline in Oct 2023."))
    topic: str = field(metadata=doc(
        "Bybit topic. v5: orderbook (with depth) orderbook.rpi publicTrade tickers kline "
        "(with interval) priceLimit; v5-private: order order.spot execution execution.spot "
        "execution.fast execution.fast.spot wallet; v1: trade realtimes kline (or "
        "kline_<interval>) depth mergedDepth diffDepth lt; v2: depth kline trade bookTicker "
        "realtimes; private: outboundAccountInfo executionReport ticketInfo "
        "stop_executionReport."))
    symbols: list[str] = field(default_factory=list, metadata=doc(
        "Symbols to subscribe (public streams; private topics take none).",
        example=["BTCUSDT", "ETHUSDT"]))
    interval: str | int | None = field(default=None, metadata=doc(
        "kline interval. v5: " + ", ".join(topics.V5_KLINE_INTERVALS) + " (minutes, day, "
        "week, month; 1 may be written as a number); v1/v2: "
        + ", ".join(topics.KLINE_INTERVALS) + "."))
    depth: int | None = field(default=None, metadata=doc(
        "v5 orderbook depth: " + ", ".join(map(str, topics.V5_ORDERBOOK_DEPTHS)) + "."))
    dump_scale: int | None = field(default=None, metadata=doc(
        "mergedDepth: decimal places prices are aggregated to (Bybit's dumpScale)."))
    binary: bool = field(default=False, metadata=doc(
        "Ask Bybit for compressed binary frames."))
    kafka_topic: str | None = field(default=None, metadata=doc(
        "Kafka topic for this subscription, overriding `kafka.topic_template`."))
    archive: bool | None = field(default=None, metadata=doc(
        "Archive this subscription's raw frames (unset: `archive.enabled`)."))

    @property
    def spec(self) -> topics.TopicSpec:
        found = topics.lookup(self.stream, self.topic)
        assert found is not None, "validated at load time"
        return found

    @property
    def topic_id(self) -> str:
        """Bybit topic plus its parameter: ``kline_1m``, ``mergedDepth_1``, ``trade``;
        v5: ``orderbook.50``, ``kline.1``, ``publicTrade``, ``order.spot``."""
        interval = None if self.interval is None else str(self.interval)
        if self.stream in topics.V5_STREAMS:
            return topics.v5_topic_id(self.topic, interval, self.depth)
        return topics.topic_id(self.topic, interval, self.dump_scale)


@dataclass(frozen=True)
class Config:
    bybit: BybitConfig = field(default_factory=BybitConfig, metadata=doc(
        "Where and how to connect to Bybit."))
    kafka: KafkaConfig = field(default_factory=KafkaConfig, metadata=doc(
        "Where and how to write to Kafka."))
    serialization: SerializationConfig = field(default_factory=SerializationConfig,
                                               metadata=doc("Record encoding."))
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata=doc(
        "Prometheus metrics and health endpoints."))
    subscriptions: list[SubscriptionConfig] = field(default_factory=list, metadata=doc(
        "What to stream: each entry is one Bybit topic on one stream for a list of symbols."))
    coordination: CoordinationConfig | None = field(default=None, metadata=doc(
        "Run several replicas that share the subscriptions (off: this process streams "
        "every subscription)."))
    archive: ArchiveConfig = field(default_factory=ArchiveConfig, metadata=doc(
        "Raw frame archive, the source of `replay` (off unless enabled here or per "
        "subscription)."))

    def kafka_topic(self, sub: SubscriptionConfig) -> str:
        """The Kafka topic a subscription writes to."""
        if sub.kafka_topic:
            return sub.kafka_topic
        return self.kafka.topic_template.format(stream=sub.stream, topic=sub.topic_id)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load(path: str | Path, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read, interpolate, validate. Raises ``ConfigError`` naming the YAML path."""
    path = Path(path)
    data = read_limited(path, MAX_CONFIG_BYTES, "", "config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"config file {str(path)!r} is not UTF-8 text: {exc}") from exc
    return loads(text, env=env, base_dir=path.parent)




def loads(text: str, env: typing.Mapping[str, str] | None = None,
          base_dir: Path | None = None) -> Config:
    """Parse a YAML string into a validated ``Config``."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"the config is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("", f"not valid YAML at {where}: {problem}") from exc
    except RecursionError:
        raise ConfigError("", "the YAML is nested too deeply") from None
    if raw is None:
        raw = {}
    check_expanded_size(raw)
    ctx = _Ctx(env=os.environ if env is None else env, base_dir=base_dir or Path.cwd())
    config = _build(Config, raw, "", ctx)
    assert isinstance(config, Config)
    _check(config)
    return config


@dataclass
class _Ctx:
    env: typing.Mapping[str, str]
    base_dir: Path


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key




def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "empty"}.get(type(value),
                                                                            type(value).__name__)


def _interpolate(value: str, path: str, ctx: _Ctx) -> str:
    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in ctx.env:
            return ctx.env[name]
        if default is not None:
            return default
        raise ConfigError(path, f"environment variable {name} is not set",
                          f"export {name}=... or use ${{{name}:-default}}")
    return _ENV_RE.sub(sub, value)


def _build(cls: type, raw: Any, path: str, ctx: _Ctx) -> Any:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(path or "(top level)", f"expected a mapping, got {_type_name(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {yaml_key(f): f for f in dataclasses.fields(cls)}
    secrets = {n for n, f in fields.items() if f.metadata.get("secret")}
    allowed = set(fields) | {f"{n}_file" for n in secrets}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = _join(path, str(key))
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean '{close[0]}'?" if close else (
                "known keys: " + ", ".join(sorted(fields)))
            raise ConfigError(key_path, "unknown key", hint)
        if key.endswith("_file") and key[:-5] in secrets:
            name = key[:-5]
            if name in raw:
                raise ConfigError(key_path, f"give either {name} or {key}, not both")
            kwargs[name] = Secret(_read_secret_file(value, key_path, ctx))
            continue
        kwargs[fields[key].name] = _convert(hints[fields[key].name], value, key_path, ctx)
        check_range(kwargs[fields[key].name], fields[key].metadata, key_path)
    for name, f in fields.items():
        if (f.name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise ConfigError(_join(path, name), "is required")
    return cls(**kwargs)


def _read_secret_file(value: Any, path: str, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a file path, got {_type_name(value)}")
    file = Path(_interpolate(value, path, ctx))
    if not file.is_absolute():
        file = ctx.base_dir / file
    data = read_limited(file, MAX_SECRET_FILE_BYTES, path, "secret file")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(path, f"secret file {str(file)!r} is not UTF-8 text") from None




def _convert(tp: Any, value: Any, path: str, ctx: _Ctx) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in get_args(tp):
                return None
            raise ConfigError(path, "must not be empty")
        first: ConfigError | None = None
        for option in options:  # the first type that accepts the value wins
            try:
                return _convert(option, value, path, ctx)
            except ConfigError as exc:
                first = first or exc
        assert first is not None
        raise first
    if isinstance(value, str) and "${" in value:
        value = _interpolate(value, path, ctx)
        value = _coerce_interpolated(tp, value)
    if tp is Secret:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_type_name(value)}")
        return Secret(value)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(path, f"{value!r} is not one of {', '.join(map(str, choices))}",
                              _UNSUPPORTED.get(value) if isinstance(value, str) else None)
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, ctx)  # type: ignore[arg-type]
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_type_name(value)}")
        return [_convert(item_tp, v, f"{path}[{i}]", ctx) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {_type_name(value)}")
        return {str(k): _interpolate_tree(v, _join(path, str(k)), ctx) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(path, f"must be a finite number, got {value!r}")
        if value <= 0:
            raise ConfigError(path, f"must be positive, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {_type_name(value)}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug, not bad input


# Values a choice deliberately leaves out, and why (shown with the error).
_UNSUPPORTED = {
    "OAUTHBEARER": "OAUTHBEARER needs a token provider, which the connector does not have; "
                   "use PLAIN or SCRAM",
}


def _coerce_interpolated(tp: Any, value: str) -> Any:
    """``${PORT}`` in a number or boolean field: parse the substituted text."""
    try:
        if tp is int:
            return int(value)
        if tp is float:
            return float(value)
    except ValueError:
        return value
    if tp is bool and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _interpolate_tree(value: Any, path: str, ctx: _Ctx) -> Any:
    if isinstance(value, str):
        return _interpolate(value, path, ctx)
    return value


# --------------------------------------------------------------------------
# Cross-field checks
# --------------------------------------------------------------------------


def _check(config: Config) -> None:
    _check_kafka(config.kafka)
    _check_archive(config)
    _check_serialization(config.serialization)
    if config.coordination is not None:
        _check_coordination(config.coordination)
    if not config.subscriptions:
        raise ConfigError("subscriptions", "is empty: subscribe to at least one topic")
    seen: dict[tuple[str, str, str], int] = {}
    kinds_by_kafka_topic: dict[str, tuple[str, int]] = {}
    for i, sub in enumerate(config.subscriptions):
        path = f"subscriptions[{i}]"
        _check_subscription(sub, path, config)
        for j, symbol in enumerate(sub.symbols or ["*"]):
            key = (sub.stream, sub.topic_id, symbol)
            if key in seen:
                what = f"{sub.stream} {sub.topic_id} {symbol}" if symbol != "*" else (
                    f"{sub.stream} {sub.topic_id}")
                where = f"{path}.symbols[{j}]" if sub.symbols else path
                raise ConfigError(where, f"duplicate subscription: {what} is already "
                                         f"subscribed by subscriptions[{seen[key]}]")
            seen[key] = i
        kafka_topic = config.kafka_topic(sub)
        if not KAFKA_TOPIC_RE.match(kafka_topic):
            raise ConfigError(f"{path}.kafka_topic" if sub.kafka_topic else "kafka.topic_template",
                              f"{kafka_topic!r} is not a legal Kafka topic name",
                              "use letters, digits, '.', '_' and '-', at most 249 characters")
        kind = sub.spec.kind
        other = kinds_by_kafka_topic.get(kafka_topic)
        if other and other[0] != kind:
            raise ConfigError(f"{path}.kafka_topic" if sub.kafka_topic else path,
                              f"Kafka topic {kafka_topic!r} already carries {other[0]} records "
                              f"from subscriptions[{other[1]}]; {kind} records have a "
                              "different schema", "give this subscription its own kafka_topic")
        kinds_by_kafka_topic.setdefault(kafka_topic, (kind, i))
        if kafka_topic == config.kafka.dead_letter_topic:
            raise ConfigError(f"{path}.kafka_topic" if sub.kafka_topic else path,
                              f"{kafka_topic!r} is the dead-letter topic")
    if any(s.stream in ("private", "v5-private") for s in config.subscriptions):
        creds = config.bybit.credentials
        for name in ("api_key", "api_secret"):
            if getattr(creds, name) is None or not getattr(creds, name).get():
                raise ConfigError(f"bybit.credentials.{name}",
                                  "is required because a private topic is subscribed",
                                  f"set {name}: ${{BYBIT_{name.upper()}}} or {name}_file")


def _check_archive(config: Config) -> None:
    template = config.archive.topic_template
    try:
        sample = template.format(stream="v5")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("archive.topic_template", f"unknown placeholder {exc}",
                          "only {stream} is known") from exc
    if not KAFKA_TOPIC_RE.match(sample):
        raise ConfigError("archive.topic_template",
                          f"{sample!r} is not a legal Kafka topic name")
    typed = {config.kafka_topic(s) for s in config.subscriptions}
    for stream in {s.stream for s in config.subscriptions}:
        if config.archive.topic(stream) in typed | {config.kafka.dead_letter_topic}:
            raise ConfigError("archive.topic_template",
                              f"{config.archive.topic(stream)!r} already carries other records")


def _check_kafka(kafka: KafkaConfig) -> None:
    if not kafka.bootstrap_servers:
        raise ConfigError("kafka.bootstrap_servers", "is empty: give at least one host:port")
    for i, server in enumerate(kafka.bootstrap_servers):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"kafka.bootstrap_servers[{i}]",
                              f"{server!r} is not host:port", "e.g. kafka:9092")
        if not 1 <= int(port) <= 65535:
            raise ConfigError(f"kafka.bootstrap_servers[{i}]",
                              f"{server!r} has port {int(port)}, not between 1 and 65535")
    if kafka.client == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") is None:
        raise ConfigError("kafka.client", "confluent-kafka is not installed",
                          "pip install 'bybit-kafka-connector[confluent]' or use kafka-python")
    allowed = sorted(allowed_settings(kafka.client))
    for key in unknown_settings(kafka.client, kafka.producer):
        close = difflib.get_close_matches(key, allowed, n=1)
        raise ConfigError(f"kafka.producer.{key}",
                          f"is not a {kafka.client} producer setting",
                          f"did you mean '{close[0]}'?" if close else None)
    for key, value in kafka.producer.items():
        # kafka-python settings are scalars (api_version also a short list of ints).
        if isinstance(value, list) and key == "api_version" and len(value) <= 4 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            continue
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ConfigError(f"kafka.producer.{key}", "expected a string, number or boolean, "
                              f"got {_type_name(value)}")
    if "{topic}" not in kafka.topic_template:
        raise ConfigError("kafka.topic_template", "must contain {topic}",
                          "e.g. bybit.spot.{stream}.{topic}")
    try:
        kafka.topic_template.format(stream="v1", topic="trade")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("kafka.topic_template", f"unknown placeholder {exc}",
                          "only {stream} and {topic} are known") from exc
    if not KAFKA_TOPIC_RE.match(kafka.dead_letter_topic):
        raise ConfigError("kafka.dead_letter_topic",
                          f"{kafka.dead_letter_topic!r} is not a legal Kafka topic name")
    for key, value in kafka.topic_creation.configs.items():
        if key not in TOPIC_CONFIG_KEYS:
            close = difflib.get_close_matches(key, sorted(TOPIC_CONFIG_KEYS), n=1)
            raise ConfigError(f"kafka.topic_creation.configs.{key}",
                              "is not a Kafka topic-level setting",
                              f"did you mean '{close[0]}'?" if close else None)
        if isinstance(value, list | dict) or value is None:
            raise ConfigError(f"kafka.topic_creation.configs.{key}",
                              f"expected a string, number or boolean, got {_type_name(value)}")
    tc = kafka.topic_creation
    min_isr = tc.configs.get("min.insync.replicas")
    if tc.replication_factor is not None and min_isr is not None and (
            str(min_isr).isdigit() and int(min_isr) > tc.replication_factor):
        raise ConfigError("kafka.topic_creation.configs.min.insync.replicas",
                          f"{min_isr} is more than replication_factor "
                          f"({tc.replication_factor}): no acks=all write could succeed",
                          "e.g. replication_factor: 3 with min.insync.replicas: 2")
    sec = kafka.security
    if sec.security_protocol.startswith("SASL") and sec.sasl_mechanism is None:
        raise ConfigError("kafka.security.sasl_mechanism",
                          f"is required with security_protocol {sec.security_protocol}")
    if sec.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        if not sec.sasl_plain_username or sec.sasl_plain_password is None:
            raise ConfigError("kafka.security.sasl_plain_username",
                              f"{sec.sasl_mechanism} needs sasl_plain_username and "
                              "sasl_plain_password (or sasl_plain_password_file)")


def _check_coordination(coord: CoordinationConfig) -> None:
    if not GROUP_ID_RE.match(coord.group):
        raise ConfigError("coordination.group", f"{coord.group!r} is not a legal consumer group id",
                          "use letters, digits, '.', '_' and '-', at most 200 characters")
    if not 1 <= coord.shards <= 1000:
        raise ConfigError("coordination.shards", f"{coord.shards} is not between 1 and 1000")
    if not KAFKA_TOPIC_RE.match(coord.coordination_topic):
        raise ConfigError("coordination.topic",
                          f"{coord.coordination_topic!r} is not a legal Kafka topic name")
    if coord.standby not in (0, 1):
        raise ConfigError("coordination.standby", f"{coord.standby} is not 0 or 1")
    if coord.standby and coord.standby_buffer_seconds < coord.session_timeout_seconds + 10:
        raise ConfigError("coordination.standby_buffer_seconds",
                          f"{coord.standby_buffer_seconds} is less than session_timeout_seconds "
                          f"+ 10 ({coord.session_timeout_seconds + 10:g})",
                          "a standby must still hold what the dead owner did not write "
                          "when the group notices the crash")
    if coord.standby_buffer_bytes < 1024 * 1024:
        raise ConfigError("coordination.standby_buffer_bytes",
                          f"{coord.standby_buffer_bytes} is less than 1 MiB")
    if coord.heartbeat_interval_seconds * 3 > coord.session_timeout_seconds:
        raise ConfigError("coordination.heartbeat_interval_seconds",
                          f"{coord.heartbeat_interval_seconds} is more than a third of "
                          f"session_timeout_seconds ({coord.session_timeout_seconds})",
                          "Kafka needs several heartbeats per session timeout")


def _check_serialization(ser: SerializationConfig) -> None:
    if ser.format == "confluent" and not ser.schema_registry.url:
        raise ConfigError("serialization.schema_registry.url",
                          "is required when serialization.format is 'confluent'",
                          "or use format: avro (no registry)")
    url = ser.schema_registry.url
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("serialization.schema_registry.url",
                          f"{url!r} is not an http(s) URL")


def _check_subscription(sub: SubscriptionConfig, path: str, config: Config) -> None:
    if sub.stream in topics.V5_STREAMS:
        _check_v5_subscription(sub, path)
        return
    if sub.depth is not None:
        raise ConfigError(f"{path}.depth", f"only v5 orderbook takes a depth, not {sub.stream} "
                                           f"{sub.topic}")
    # v1 allows Bybit's own spelling kline_<interval>; normalise it.
    if sub.stream == "v1" and sub.topic.startswith("kline_"):
        interval = sub.topic[len("kline_"):]
        if sub.interval is not None and sub.interval != interval:
            raise ConfigError(f"{path}.interval", f"{sub.interval!r} contradicts topic "
                                                  f"{sub.topic!r}")
        object.__setattr__(sub, "topic", "kline")
        object.__setattr__(sub, "interval", interval)
    spec = topics.lookup(sub.stream, sub.topic)
    if spec is None:
        known = topics.topics_of(sub.stream)
        other = [s for s in topics.STREAMS if topics.lookup(s, sub.topic)]
        hint = (f"{sub.topic!r} exists on stream {other[0]}" if other
                else f"known {sub.stream} topics: {', '.join(known)}")
        raise ConfigError(f"{path}.topic", f"{sub.topic!r} is not a {sub.stream} topic", hint)
    if spec.param == "interval":
        if sub.interval is None:
            raise ConfigError(f"{path}.interval", "is required for kline",
                              "one of " + ",".join(topics.KLINE_INTERVALS))
        if not isinstance(sub.interval, str) or sub.interval not in topics.KLINE_INTERVALS:
            raise ConfigError(f"{path}.interval", f"{sub.interval!r} is not one of "
                              + ",".join(topics.KLINE_INTERVALS))
    elif sub.interval is not None:
        raise ConfigError(f"{path}.interval", f"only kline takes an interval, not {sub.topic}")
    if spec.param == "dump_scale":
        if sub.dump_scale is None:
            raise ConfigError(f"{path}.dump_scale", "is required for mergedDepth",
                              "decimal places to aggregate prices to, e.g. dump_scale: 1")
        if not 0 <= sub.dump_scale <= 18:
            raise ConfigError(f"{path}.dump_scale", f"{sub.dump_scale} is not between 0 and 18")
    elif sub.dump_scale is not None:
        raise ConfigError(f"{path}.dump_scale",
                          f"only mergedDepth takes a dump_scale, not {sub.topic}")
    if sub.stream == "private":
        if sub.symbols:
            raise ConfigError(f"{path}.symbols", "private topics take no symbols",
                              "the private stream carries every symbol of the account")
        if sub.binary:
            raise ConfigError(f"{path}.binary", "the private stream has no binary mode")
        return
    _check_symbols(sub, path)


def _check_v5_subscription(sub: SubscriptionConfig, path: str) -> None:
    """v5: topic from the table, depth for orderbook, Bybit's interval names for
    kline (an integer such as 1 is normalised to "1"), symbols on public only."""
    spec = topics.lookup(sub.stream, sub.topic)
    if spec is None:
        other = [s for s in topics.STREAMS if topics.lookup(s, sub.topic)]
        hint = (f"{sub.topic!r} exists on stream {other[0]}" if other
                else f"one of {', '.join(topics.topics_of(sub.stream))}")
        raise ConfigError(f"{path}.topic", f"{sub.topic!r} is not a {sub.stream} topic", hint)
    depths = ", ".join(map(str, topics.V5_ORDERBOOK_DEPTHS))
    if spec.param == "depth":
        if sub.depth is None:
            raise ConfigError(f"{path}.depth", f"is required for orderbook: one of {depths}")
        if sub.depth not in topics.V5_ORDERBOOK_DEPTHS:
            raise ConfigError(f"{path}.depth", f"{sub.depth} is not one of {depths}")
    elif sub.depth is not None:
        raise ConfigError(f"{path}.depth", f"only orderbook takes a depth, not {sub.topic}")
    intervals = ", ".join(topics.V5_KLINE_INTERVALS)
    if spec.param == "interval":
        if sub.interval is None:
            raise ConfigError(f"{path}.interval", f"is required for kline: one of {intervals}")
        interval = str(sub.interval)
        if interval not in topics.V5_KLINE_INTERVALS:
            v5_hint: str | None = None
            legacy = {"1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60",
                      "2h": "120", "4h": "240", "6h": "360", "12h": "720", "1d": "D",
                      "1w": "W", "1M": "M"}
            if interval in legacy:
                v5_hint = f"v5 names it {legacy[interval]!r}"
            raise ConfigError(f"{path}.interval", f"{sub.interval!r} is not one of {intervals}",
                              v5_hint)
        object.__setattr__(sub, "interval", interval)
    elif sub.interval is not None:
        raise ConfigError(f"{path}.interval", f"only kline takes an interval, not {sub.topic}")
    if sub.dump_scale is not None:
        raise ConfigError(f"{path}.dump_scale", "v5 topics take no dump_scale")
    if sub.binary:
        raise ConfigError(f"{path}.binary", "v5 streams have no binary mode")
    if sub.stream == "v5-private":
        if sub.symbols:
            raise ConfigError(f"{path}.symbols", "private topics take no symbols",
                              "the private stream carries every symbol of the account")
        return
    _check_symbols(sub, path)


def _check_symbols(sub: SubscriptionConfig, path: str) -> None:
    """A public subscription lists at least one symbol, each in Bybit's spelling."""
    if not sub.symbols:
        raise ConfigError(f"{path}.symbols", "is empty: list at least one symbol",
                          "e.g. symbols: [BTCUSDT]")
    for j, symbol in enumerate(sub.symbols):
        if not SYMBOL_RE.match(symbol):
            hint = (f"Bybit symbols are upper case: {symbol.upper()!r}"
                    if SYMBOL_RE.match(symbol.upper()) else "e.g. BTCUSDT")
            raise ConfigError(f"{path}.symbols[{j}]", f"{symbol!r} is not a Bybit symbol", hint)
