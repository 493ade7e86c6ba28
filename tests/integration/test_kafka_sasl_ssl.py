"""Kafka as production runs it: SCRAM-SHA-512 over TLS, against a real broker.

One ``SaslSslBroker`` for the module (a throw-away CA, one SCRAM user). For
both clients, run as users run it (processes): ``run`` delivers with the
password read from ``sasl_plain_password_file`` and ``consume --config``
reads the records back; a wrong password, a CA that did not sign the
broker's certificate, and a plaintext client on the TLS port each give one
log line naming the cause, ``/readyz`` 503 saying it, a bounded number of
attempts (counted on the broker's side too), and never the secret; ``consume``
with the same settings prints that cause as its one error line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.config.model import KafkaConfig, KafkaSecurity, Secret
from connector.dev.kafka_broker import free_port
from connector.dev.sasl_broker import SaslSslBroker
from connector.dev.tls import make_ca
from connector.errors import KafkaAccessError
from connector.exchange import ExchangeServer
from connector.sink.probe import probe
from connector.sink.producers import CLIENTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[SaslSslBroker]:
    with SaslSslBroker() as started:
        yield started


@pytest.fixture(scope="module")
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0, rate=20) as server:
        yield server


def write_config(tmp_path: Path, exchange: ExchangeServer, bootstrap: str, client: str,
                 security: str, prefix: str, metrics_port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
bybit:
  urls: {{v5: {exchange.url}/v5/public/spot}}
kafka:
  bootstrap_servers: ["{bootstrap}"]
  client: {client}
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
  security:
{security}
metrics: {{enabled: true, host: 127.0.0.1, port: {metrics_port}}}
subscriptions:
  - {{stream: v5, topic: publicTrade, symbols: [BTCUSDT]}}
""")
    return path


def sasl_ssl(broker: SaslSslBroker, password_file: Path, ca_file: Path) -> str:
    return f"""    security_protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    sasl_plain_username: {broker.username}
    sasl_plain_password_file: {password_file}
    ssl_cafile: {ca_file}"""


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
        except (OSError, ValueError):  # the listener not up yet
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_run(config: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "connector", *options, "run", "--config",
                             str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_run(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def failed_logins(broker: SaslSslBroker) -> int:
    """Connections the broker refused at TLS or SASL (its own log's count)."""
    return broker.log_tail(lines=10**9).count("Failed authentication with")


@pytest.mark.parametrize("client", CLIENTS)
def test_run_delivers_over_sasl_ssl_and_consume_reads_back(
        broker: SaslSslBroker, exchange: ExchangeServer, tmp_path: Path, client: str) -> None:
    assert broker.tls is not None
    prefix = f"sasl.{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = write_config(tmp_path, exchange, broker.sasl_bootstrap_servers, client,
                          sasl_ssl(broker, password_file(tmp_path, broker.password),
                                   broker.tls.ca_file), prefix, port)
    # DEBUG: the Kafka clients' own logs too.
    proc = start_run(config, "--log-level", "DEBUG")
    try:
        wait(lambda: readyz(port)[0] == 200, 60, "/readyz 200 over SASL_SSL")
        body = wait(lambda: (lambda b: b if b["kafka"].get("seconds_since_last_ack")
                             is not None else None)(readyz(port)[1]), 30, "a first ack")
        assert body["kafka"]["connected"] is True
    finally:
        code, out = stop_run(proc)
    assert code == 0, out
    topic = f"{prefix}.v5.publicTrade"
    consumed = subprocess.run(
        [sys.executable, "-m", "connector", "consume", "--config", str(config), "--topic", topic,
         "--from-beginning", "--timeout", "5", "--max-messages", "20"],
        capture_output=True, text=True, timeout=120)
    assert consumed.returncode == 0, consumed.stderr
    lines = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert lines, consumed.stderr
    for line in lines:
        assert "error" not in line, line
        assert line["value"]["bybit_topic"] == "publicTrade"
    for text in (out, consumed.stdout, consumed.stderr):
        assert broker.password not in text


def wrong_password(broker: SaslSslBroker, tmp_path: Path) -> tuple[str, str]:
    assert broker.tls is not None
    return (sasl_ssl(broker, password_file(tmp_path, "not-" + broker.password),
                     broker.tls.ca_file),
            "refused: Authentication failed")


def unknown_ca(broker: SaslSslBroker, tmp_path: Path) -> tuple[str, str]:
    other = make_ca(tmp_path / "other-ca")
    return (sasl_ssl(broker, password_file(tmp_path, broker.password), other),
            f"is not trusted by kafka.security.ssl_cafile ({other})")


def plaintext_client(broker: SaslSslBroker, tmp_path: Path) -> tuple[str, str]:
    return ("    security_protocol: PLAINTEXT",
            "is a TLS listener but kafka.security.security_protocol is PLAINTEXT")


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", [wrong_password, unknown_ca, plaintext_client],
                         ids=["wrong-password", "unknown-ca", "plaintext-client"])
def test_refused_settings_are_named_once_without_a_retry_storm(
        broker: SaslSslBroker, exchange: ExchangeServer, tmp_path: Path, client: str,
        case: Callable[[SaslSslBroker, Path], tuple[str, str]]) -> None:
    security, cause = case(broker, tmp_path)
    port = free_port()
    config = write_config(tmp_path, exchange, broker.sasl_bootstrap_servers, client, security,
                          f"sasl.{uuid.uuid4().hex[:8]}", port)
    refused_before = failed_logins(broker)
    started = time.monotonic()
    proc = start_run(config)
    try:
        # Three attempts: the first, and two retries after 1 s and 2 s of backoff.
        status, body = wait(lambda: (lambda r: r if r[1]["kafka"].get("attempts", 0) >= 3
                                     else None)(readyz(port)), 30, "three attempts")
        window = time.monotonic() - started
        status, body = readyz(port)
    finally:
        code, out = stop_run(proc)
    refused = failed_logins(broker) - refused_before
    assert code == 0, out
    assert status == 503
    assert body["ready"] is False and cause in body["kafka"]["last_error"], body
    attempts = body["kafka"]["attempts"]
    assert attempts <= 4, (attempts, window)
    # One connection per attempt reaches the broker's TLS/SASL layer, not a client's burst.
    assert refused <= attempts + 1, (refused, attempts, window)
    named = [line for line in out.splitlines() if cause in line]
    assert len(named) == 1, out
    assert " ERROR " in named[0] and "Kafka refuses this client" in named[0]
    assert len([line for line in out.splitlines() if "WARNING" in line or "ERROR" in line]) \
        == 1, out
    assert broker.password not in out
    # consume --config with the same settings: one error line naming the cause, exit 1.
    started = time.monotonic()
    consumed = subprocess.run(
        [sys.executable, "-m", "connector", "consume", "--config", str(config), "--topic",
         "any", "--timeout", "1"], capture_output=True, text=True, timeout=120)
    assert consumed.returncode == 1, consumed
    assert consumed.stderr.splitlines() == [consumed.stderr.strip()], consumed.stderr
    assert cause in consumed.stderr and broker.password not in consumed.stderr
    assert time.monotonic() - started < 15


def security(broker: SaslSslBroker, **overrides: Any) -> KafkaSecurity:
    assert broker.tls is not None
    settings: dict[str, Any] = {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": broker.username, "sasl_plain_password": Secret(broker.password),
        "ssl_cafile": str(broker.tls.ca_file)}
    return KafkaSecurity(**{**settings, **overrides})


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_probe_logs_in_with_each_mechanism_and_names_a_refusal(broker: SaslSslBroker,
                                                                mechanism: str) -> None:
    address = [broker.sasl_bootstrap_servers]
    probe(KafkaConfig(bootstrap_servers=address,
                      security=security(broker, sasl_mechanism=mechanism)), 5.0)
    wrong = security(broker, sasl_mechanism=mechanism, sasl_plain_password=Secret("nope-nope"))
    with pytest.raises(KafkaAccessError, match=rf"SASL {mechanism} login of user 'connector'"
                                               r".* refused") as caught:
        probe(KafkaConfig(bootstrap_servers=address, security=wrong), 5.0)
    assert "nope-nope" not in str(caught.value)


def test_probe_names_tls_and_sasl_spoken_to_a_plaintext_listener(broker: SaslSslBroker) -> None:
    address = [broker.bootstrap_servers]  # the PLAINTEXT listener
    with pytest.raises(KafkaAccessError, match=r"TLS handshake with Kafka at .* is it a TLS"):
        probe(KafkaConfig(bootstrap_servers=address, security=security(broker)), 5.0)
    with pytest.raises(KafkaAccessError, match="SCRAM-SHA-512 login"):
        probe(KafkaConfig(bootstrap_servers=address,
                          security=security(broker, security_protocol="SASL_PLAINTEXT")), 5.0)
    probe(KafkaConfig(bootstrap_servers=address), 5.0)  # and plaintext is let in
