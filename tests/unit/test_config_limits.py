"""Config limits: hostile or mistaken files get one clear error naming the YAML
path, at ``validate`` time, instead of crashing ``run`` (alias bombs, huge or
endless secret files, out-of-range numbers, an unusable SASL mechanism)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.config.limits import MAX_CONFIG_BYTES, MAX_NODES, MAX_SECRET_FILE_BYTES
from connector.config.load import load, loads
from connector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SUB = """
subscriptions:
  - {stream: v1, topic: trade, symbols: [BTCUSDT]}
"""


def cfg(extra: str) -> str:
    return "kafka:\n  bootstrap_servers: [\"127.0.0.1:9092\"]\n" + textwrap.dedent(extra) + SUB


def error(text: str, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        loads(text, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def alias_bomb(levels: int = 9) -> str:
    lines = ["  producer:", "    client_id:", '      - &l0 ["lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"      - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "kafka:\n  bootstrap_servers: [\"127.0.0.1:9092\"]\n" + "\n".join(lines) + "\n" + SUB


def test_alias_bomb_under_producer_is_rejected_with_its_path() -> None:
    message = error(alias_bomb())
    assert message.startswith("kafka.producer.client_id")
    assert f"more than {MAX_NODES} values" in message
    assert "alias" in message


def test_ordinary_aliases_still_work() -> None:
    config = loads("""
kafka: {bootstrap_servers: ["127.0.0.1:9092"]}
majors: &majors [BTCUSDT, ETHUSDT]
""".replace("majors: &majors [BTCUSDT, ETHUSDT]\n", "") + """
subscriptions:
  - {stream: v1, topic: trade, symbols: &majors [BTCUSDT, ETHUSDT]}
  - {stream: v2, topic: trade, symbols: *majors}
""")
    assert config.subscriptions[1].symbols == ["BTCUSDT", "ETHUSDT"]


def test_producer_values_must_be_scalars() -> None:
    assert error(cfg("""
kafka:
  producer: {client_id: [a, b]}
""").replace('kafka:\n  bootstrap_servers: ["127.0.0.1:9092"]\n\nkafka:\n',
             'kafka:\n  bootstrap_servers: ["127.0.0.1:9092"]\n')) == (
        "kafka.producer.client_id: expected a string, number or boolean, got a list")


def test_deeply_nested_yaml_is_a_config_error() -> None:
    message = error("kafka: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert "nested" in message


def test_oversized_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(cfg("") + "#" * (MAX_CONFIG_BYTES + 1) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load(path)


def test_secret_file_size_is_limited(tmp_path: Path) -> None:
    big = tmp_path / "key"
    big.write_text("k" * (MAX_SECRET_FILE_BYTES + 1))
    text = cfg(f"""
bybit:
  credentials: {{api_key_file: {big}, api_secret: s}}
""")
    assert error(text) == (f"bybit.credentials.api_key_file: secret file {str(big)!r} is larger "
                           "than 64 KiB")
    endless = text.replace(str(big), "/dev/zero")
    assert error(endless) == ("bybit.credentials.api_key_file: secret file '/dev/zero' is "
                              "larger than 64 KiB")
    ok = tmp_path / "ok"
    ok.write_text("k" * (MAX_SECRET_FILE_BYTES - 1) + "\n")
    loads(text.replace(str(big), str(ok)))


def test_oauthbearer_is_refused_naming_the_setting() -> None:
    message = error("""
kafka:
  bootstrap_servers: ["127.0.0.1:9092"]
  security: {security_protocol: SASL_SSL, sasl_mechanism: OAUTHBEARER}
""" + SUB)
    assert message.startswith("kafka.security.sasl_mechanism: 'OAUTHBEARER' is not one of "
                              "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    assert "token provider" in message


RANGES = [
    ("metrics:\n  port: 99999\n", "metrics.port: must be between 0 and 65535, got 99999"),
    ("metrics:\n  port: -1\n", "metrics.port: must be between 0 and 65535, got -1"),
    ("bybit:\n  max_subscriptions_per_connection: 0\n",
     "bybit.max_subscriptions_per_connection: must be at least 1, got 0"),
    ("bybit:\n  max_symbols_per_request: 0\n",
     "bybit.max_symbols_per_request: must be at least 1, got 0"),
    ("bybit:\n  ping_interval_seconds: .inf\n",
     "bybit.ping_interval_seconds: must be a finite number, got inf"),
    ("bybit:\n  pong_timeout_seconds: .nan\n",
     "bybit.pong_timeout_seconds: must be a finite number, got nan"),
    ("bybit:\n  ack_timeout_seconds: 0\n", "bybit.ack_timeout_seconds: must be positive, got 0"),
    ("bybit:\n  connect_timeout_seconds: 1.0e+12\n",
     "bybit.connect_timeout_seconds: must be at most 86400, got 1000000000000.0"),
    ("bybit:\n  max_frame_bytes: 10\n", "bybit.max_frame_bytes: must be between 4096 and "
                                          "1073741824, got 10"),
    ("kafka:\n  max_pending_records: 0\n", "kafka.max_pending_records: must be at least 1, got 0"),
    ("kafka:\n  flush_timeout_seconds: -3\n",
     "kafka.flush_timeout_seconds: must be positive, got -3"),
]


@pytest.mark.parametrize(("extra", "message"), RANGES,
                         ids=[r[1].split(":")[0] + "=" + r[0].split(":")[-1].strip()
                              for r in RANGES])
def test_numbers_out_of_range_name_their_path(extra: str, message: str) -> None:
    text = extra + SUB
    if not extra.startswith("kafka:"):
        text = "kafka:\n  bootstrap_servers: [\"127.0.0.1:9092\"]\n" + text
    assert error(text) == message


def test_port_from_the_environment_is_range_checked() -> None:
    assert error('metrics:\n  port: "${PORT}"\n' + SUB, env={"PORT": "70000"}) == (
        "metrics.port: must be between 0 and 65535, got 70000")


def test_bootstrap_server_port_is_range_checked() -> None:
    assert error('kafka: {bootstrap_servers: ["kafka:99999"]}\n' + SUB) == (
        "kafka.bootstrap_servers[0]: 'kafka:99999' has port 99999, not between 1 and 65535")


def test_metrics_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "c.yaml"
        path.write_text(f"""
kafka: {{bootstrap_servers: ["127.0.0.1:1"]}}
metrics: {{host: 127.0.0.1, port: {port}}}
{SUB}""")
        done = subprocess.run([sys.executable, "-m", "connector", "run", "--config", str(path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # the error alone, no "stopping ..." line
    assert f"metrics.port: cannot listen on 127.0.0.1:{port}" in lines[0]
