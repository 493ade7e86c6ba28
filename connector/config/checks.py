"""The validation rules a field's type cannot express, with their YAML-path errors.

Every error names the YAML path at fault, e.g.
``subscriptions[3].interval: '2m' is not one of 1m, 3m, ...``.
These run on the built dataclasses, after ``connector.config.load`` has checked
each field's type and range.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from typing import Any

from connector.bybit import topics
from connector.config.kafka_keys import (
    TOPIC_CONFIG_KEYS,
    allowed_settings,
    unknown_settings,
)
from connector.config.model import (
    Config,
    CoordinationConfig,
    KafkaConfig,
    SerializationConfig,
    SubscriptionConfig,
)
from connector.errors import ConfigError

SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")
KAFKA_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
GROUP_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")



def check(config: Config) -> None:
    """The rules no single field can check: cross-field, per-subscription, credentials.

    Raises ``ConfigError`` naming the YAML path at fault.
    """
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
                              f"got {type_name(value)}")
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
                              f"expected a string, number or boolean, got {type_name(value)}")
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


def type_name(value: Any) -> str:
    """How an error names the YAML type it got (shared with the loader's errors)."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "empty"}.get(type(value),
                                                                            type(value).__name__)
