"""Config loading: the example configs load, and every bad config gets its
exact error naming the YAML path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from connector.config import schema as config_schema
from connector.config.load import load, loads
from connector.config.model import Secret
from connector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

BASE = """
kafka:
  bootstrap_servers: ["127.0.0.1:9092"]
"""


def cfg(extra: str, base: str = BASE) -> str:
    return base + textwrap.dedent(extra)


SUB_TRADE = """
subscriptions:
  - stream: v1
    topic: trade
    symbols: [BTCUSDT]
"""

# (name, yaml, exact error message)
BAD_CONFIGS = [
    ("unknown top-level key", cfg("kafak: {}\n" + SUB_TRADE),
     "kafak: unknown key (did you mean 'kafka'?)"),
    ("unknown nested key", cfg(SUB_TRADE + "metrics:\n  prot: 9000\n"),
     "metrics.prot: unknown key (did you mean 'port'?)"),
    ("unknown topic", cfg("""
subscriptions:
  - stream: v1
    topic: trades
    symbols: [BTCUSDT]
"""), "subscriptions[0].topic: 'trades' is not a v1 topic (known v1 topics: trade, realtimes, "
      "kline, depth, mergedDepth, diffDepth, lt)"),
    ("topic on the wrong stream", cfg("""
subscriptions:
  - stream: v2
    topic: diffDepth
    symbols: [BTCUSDT]
"""), "subscriptions[0].topic: 'diffDepth' is not a v2 topic ('diffDepth' exists on stream v1)"),
    ("bad interval", cfg("""
subscriptions:
  - stream: v1
    topic: trade
    symbols: [BTCUSDT]
  - stream: v2
    topic: kline
    interval: 2m
    symbols: [BTCUSDT]
"""), "subscriptions[1].interval: '2m' is not one of 1m,3m,5m,15m,30m,1h,2h,4h,6h,12h,1d,1w,1M"),
    ("bad v1 kline spelling", cfg("""
subscriptions:
  - stream: v1
    topic: kline_2m
    symbols: [BTCUSDT]
"""), "subscriptions[0].interval: '2m' is not one of 1m,3m,5m,15m,30m,1h,2h,4h,6h,12h,1d,1w,1M"),
    ("missing interval", cfg("""
subscriptions:
  - stream: v2
    topic: kline
    symbols: [BTCUSDT]
"""), "subscriptions[0].interval: is required for kline "
      "(one of 1m,3m,5m,15m,30m,1h,2h,4h,6h,12h,1d,1w,1M)"),
    ("missing dump_scale", cfg("""
subscriptions:
  - stream: v1
    topic: mergedDepth
    symbols: [BTCUSDT]
"""), "subscriptions[0].dump_scale: is required for mergedDepth "
      "(decimal places to aggregate prices to, e.g. dump_scale: 1)"),
    ("dump_scale on the wrong topic", cfg("""
subscriptions:
  - stream: v1
    topic: depth
    dump_scale: 1
    symbols: [BTCUSDT]
"""), "subscriptions[0].dump_scale: only mergedDepth takes a dump_scale, not depth"),
    ("empty symbol list", cfg("""
subscriptions:
  - stream: v1
    topic: trade
    symbols: []
"""), "subscriptions[0].symbols: is empty: list at least one symbol (e.g. symbols: [BTCUSDT])"),
    ("lower-case symbol", cfg("""
subscriptions:
  - stream: v1
    topic: trade
    symbols: [btcusdt]
"""), "subscriptions[0].symbols[0]: 'btcusdt' is not a Bybit symbol "
      "(Bybit symbols are upper case: 'BTCUSDT')"),
    ("duplicate subscription", cfg("""
subscriptions:
  - stream: v1
    topic: trade
    symbols: [BTCUSDT, ETHUSDT]
  - stream: v1
    topic: trade
    symbols: [SOLUSDT, ETHUSDT]
"""), "subscriptions[1].symbols[1]: duplicate subscription: v1 trade ETHUSDT is already "
      "subscribed by subscriptions[0]"),
    ("private without credentials", cfg("""
subscriptions:
  - stream: private
    topic: executionReport
"""), "bybit.credentials.api_key: is required because a private topic is subscribed "
      "(set api_key: ${BYBIT_API_KEY} or api_key_file)"),
    ("private with symbols", cfg("""
bybit:
  credentials: {api_key: k, api_secret: s}
subscriptions:
  - stream: private
    topic: ticketInfo
    symbols: [BTCUSDT]
"""), "subscriptions[0].symbols: private topics take no symbols "
      "(the private stream carries every symbol of the account)"),
    ("two schemas into one Kafka topic", cfg("""
subscriptions:
  - stream: v1
    topic: trade
    symbols: [BTCUSDT]
    kafka_topic: market
  - stream: v2
    topic: bookTicker
    symbols: [BTCUSDT]
    kafka_topic: market
"""), "subscriptions[1].kafka_topic: Kafka topic 'market' already carries v1_trade records "
      "from subscriptions[0]; v2_book_ticker records have a different schema "
      "(give this subscription its own kafka_topic)"),
    ("illegal Kafka topic", cfg("""
subscriptions:
  - stream: v1
    topic: trade
    symbols: [BTCUSDT]
    kafka_topic: "bad topic!"
"""), "subscriptions[0].kafka_topic: 'bad topic!' is not a legal Kafka topic name "
      "(use letters, digits, '.', '_' and '-', at most 249 characters)"),
    ("unknown producer setting", cfg(SUB_TRADE + "kafka:\n  producer:\n    linger: 5\n",
                                     base=""),
     "kafka.producer.linger: is not a kafka-python producer setting (did you mean 'linger_ms'?)"),
    ("bad bootstrap server", cfg(SUB_TRADE + "kafka:\n  bootstrap_servers: [kafka]\n", base=""),
     "kafka.bootstrap_servers[0]: 'kafka' is not host:port (e.g. kafka:9092)"),
    ("wrong type", cfg(SUB_TRADE + "bybit:\n  ping_interval_seconds: soon\n"),
     "bybit.ping_interval_seconds: expected a number, got 'soon'"),
    ("bad network", cfg(SUB_TRADE + "bybit:\n  network: moonnet\n"),
     "bybit.network: 'moonnet' is not one of mainnet, testnet"),
    ("confluent without registry", cfg(SUB_TRADE + "serialization:\n  format: confluent\n"),
     "serialization.schema_registry.url: is required when serialization.format is 'confluent' "
     "(or use format: avro (no registry))"),
    ("SASL without mechanism", cfg(SUB_TRADE + "kafka:\n  security:\n"
                                               "    security_protocol: SASL_SSL\n", base=""),
     "kafka.security.sasl_mechanism: is required with security_protocol SASL_SSL"),
    ("no subscriptions", BASE, "subscriptions: is empty: subscribe to at least one topic"),
    ("missing stream", cfg("subscriptions:\n  - topic: trade\n    symbols: [BTCUSDT]\n"),
     "subscriptions[0].stream: is required"),
    ("unset env var", cfg(SUB_TRADE + "bybit:\n  credentials:\n    api_key: ${NOPE_NOT_SET}\n"),
     "bybit.credentials.api_key: environment variable NOPE_NOT_SET is not set "
     "(export NOPE_NOT_SET=... or use ${NOPE_NOT_SET:-default})"),
    ("secret and secret file", cfg(SUB_TRADE + "bybit:\n  credentials:\n    api_key: x\n"
                                               "    api_key_file: /x\n"),
     "bybit.credentials.api_key_file: give either api_key or api_key_file, not both"),
    ("not YAML", "subscriptions: [\n", None),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_is_rejected_with_its_exact_message(name: str, text: str,
                                                       message: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        loads(text, env={})
    if message is None:
        assert str(info.value).startswith("not valid YAML at line 2, column 1")
    else:
        assert str(info.value) == message


def test_example_configs_load() -> None:
    config = load(ROOT / "config.yaml", env={})
    assert config.bybit.network == "mainnet"
    assert [config.kafka_topic(s) for s in config.subscriptions][:2] == [
        "bybit.spot.v5.orderbook.50", "bybit.spot.v5.publicTrade"]
    demo = load(ROOT / "scripts" / "demo-config.yaml",
                env={"BYBIT_API_KEY": "k", "BYBIT_API_SECRET": "s"})
    # the demo streams every topic kind, v5 and legacy side by side
    from connector.bybit.topics import TOPICS
    assert {s.spec.kind for s in demo.subscriptions} == {t.kind for t in TOPICS}
    assert {s.stream for s in demo.subscriptions} == {"v5", "v5-private", "v1", "v2", "private"}


def test_every_documented_topic_is_expressible() -> None:
    entries = []
    for interval in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "1w",
                     "1M"):
        entries.append(f"  - {{stream: v1, topic: kline_{interval}, symbols: [BTCUSDT]}}")
    for topic in ("trade", "realtimes", "depth", "diffDepth", "lt"):
        entries.append(f"  - {{stream: v1, topic: {topic}, symbols: [BTCUSDT]}}")
    entries.append("  - {stream: v1, topic: mergedDepth, dump_scale: 2, symbols: [BTCUSDT]}")
    for topic in ("depth", "trade", "bookTicker", "realtimes"):
        entries.append(f"  - {{stream: v2, topic: {topic}, symbols: [BTCUSDT]}}")
    entries.append("  - {stream: v2, topic: kline, interval: 1h, symbols: [BTCUSDT]}")
    for topic in ("outboundAccountInfo", "executionReport", "ticketInfo", "stop_executionReport"):
        entries.append(f"  - {{stream: private, topic: {topic}}}")
    text = (BASE + "bybit:\n  credentials: {api_key: k, api_secret: s}\nsubscriptions:\n"
            + "\n".join(entries) + "\n")
    config = loads(text, env={})
    kafka_topics = {config.kafka_topic(s) for s in config.subscriptions}
    assert len(kafka_topics) == len(config.subscriptions) == 28
    assert "bybit.spot.v1.kline_1M" in kafka_topics and "bybit.spot.v1.kline_1m" in kafka_topics
    assert "bybit.spot.v1.mergedDepth_2" in kafka_topics


def test_secrets_from_env_and_files_never_show(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t-value\n")
    text = cfg(SUB_TRADE + "bybit:\n  credentials:\n    api_key: ${KEY}\n"
                           "    api_secret_file: secret\n")
    (tmp_path / "c.yaml").write_text(text)
    config = load(tmp_path / "c.yaml", env={"KEY": "k3y-value"})
    creds = config.bybit.credentials
    assert isinstance(creds.api_key, Secret) and creds.api_key.get() == "k3y-value"
    assert creds.api_secret is not None and creds.api_secret.get() == "s3cr3t-value"
    assert "k3y-value" not in repr(config) and "s3cr3t-value" not in repr(config)


def test_json_schema_is_in_sync_and_accepts_the_examples() -> None:
    committed = (ROOT / "connector" / "config" / "config.schema.json").read_text()
    assert committed == config_schema.render(), (
        "regenerate: python -m connector.config.schema > connector/config/config.schema.json")
    schema = json.loads(committed)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in (ROOT / "config.yaml", ROOT / "scripts" / "demo-config.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_producer_keys_are_kafka_python_settings() -> None:
    from kafka import KafkaProducer

    from connector.config.kafka_keys import PRODUCER_KEYS

    assert set(KafkaProducer.DEFAULT_CONFIG) >= PRODUCER_KEYS


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_cli_validate_prints_the_plan() -> None:
    result = run_cli("validate", "--config", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "bybit.spot.v5.kline.1" in result.stdout
    assert "connections v5: 1" in result.stdout


def test_cli_validate_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_CONFIGS[4][1])
    result = run_cli("validate", "--config", str(bad))
    assert result.returncode == 2
    assert "subscriptions[1].interval: '2m' is not one of" in result.stderr


def test_cli_usage_and_version() -> None:
    assert run_cli("--version").stdout.startswith("bybit-kafka-connector ")
    assert run_cli("bogus").returncode == 2
    for args in (["--help"], ["run", "--help"], ["validate", "--help"]):
        assert run_cli(*args).returncode == 0


def test_producer_names_are_checked_against_the_chosen_client() -> None:
    kafka_python = "kafka:\n  producer:\n    linger.ms: 5\n"
    with pytest.raises(ConfigError) as info:
        loads(SUB_TRADE + kafka_python, env={})
    assert str(info.value).startswith(
        "kafka.producer.linger.ms: is not a kafka-python producer setting")
    config = loads(SUB_TRADE + "kafka:\n  client: confluent-kafka\n  producer:\n"
                   "    linger.ms: 5\n", env={})
    assert config.kafka.client == "confluent-kafka"
    with pytest.raises(ConfigError) as info:
        loads(SUB_TRADE + "kafka:\n  client: confluent-kafka\n  producer:\n"
              "    linger_ms: 5\n", env={})
    assert str(info.value) == ("kafka.producer.linger_ms: is not a confluent-kafka producer "
                               "setting (did you mean 'linger.ms'?)")
    with pytest.raises(ConfigError) as info:
        loads(SUB_TRADE + "kafka:\n  client: librdkafka\n", env={})
    assert str(info.value).startswith("kafka.client:")


def test_confluent_kafka_not_installed_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "confluent_kafka" else real(name, *a))
    with pytest.raises(ConfigError) as info:
        loads(SUB_TRADE + "kafka:\n  client: confluent-kafka\n", env={})
    assert str(info.value).startswith("kafka.client: confluent-kafka is not installed")
