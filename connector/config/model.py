"""What a config IS: the dataclasses of the YAML file and ``Secret``.

The dataclasses below are the single specification of the config file. Each
field carries its documentation (``doc``), an optional ``example`` and a
``secret`` flag in its metadata; the JSON Schema (``config.schema.json``) and
the README table are generated from them (see ``connector.config.schema``).
Reading a file into them is ``connector.config.load``; the rules a field's type
cannot express are ``connector.config.checks``.

This module is a little over 400 lines because it is one specification: every
section of the file, with its documentation, in one place, read top to bottom
like the README table it generates. Cutting it would scatter that table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from connector.bybit import topics
from connector.config.limits import MAX_SECONDS, PORT_MAX


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
