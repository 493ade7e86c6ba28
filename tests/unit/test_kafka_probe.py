"""The start-up probe's pure parts: SCRAM against the RFC's own exchange, and
a refusal that names the cause without the secret (a local fake listener:
the broker's side is covered by tests/integration/test_kafka_sasl_ssl.py)."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import pytest

from connector.config.model import KafkaConfig, KafkaSecurity, Secret
from connector.errors import DeliveryError, KafkaAccessError
from connector.sink.probe import probe, scram_final


def test_scram_sha_256_matches_rfc_7677() -> None:
    first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = ("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final, server_signature = scram_final("sha256", "pencil", first_bare, server_first)
    assert final == ("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert server_signature == base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


@pytest.fixture
def closing_listener() -> Iterator[int]:
    """A TCP listener that accepts and closes at once: something, but not Kafka."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


def kafka(port: int, **security: object) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=[f"127.0.0.1:{port}"],
                       security=KafkaSecurity(**security))  # type: ignore[arg-type]


def test_a_listener_that_is_not_kafka_is_named(closing_listener: int) -> None:
    with pytest.raises(KafkaAccessError, match="does not answer as Kafka does"):
        probe(kafka(closing_listener), 2.0)


def test_a_failed_tls_handshake_is_named_without_the_secret(closing_listener: int) -> None:
    config = kafka(closing_listener, security_protocol="SASL_SSL",
                   sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="u",
                   sasl_plain_password=Secret("s3cret-value"))
    with pytest.raises(KafkaAccessError, match="TLS handshake with Kafka at") as caught:
        probe(config, 2.0)
    assert "s3cret-value" not in str(caught.value)


def test_no_listener_is_unreachable_not_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeliveryError, match="cannot connect") as caught:
        probe(kafka(port), 1.0)
    assert not isinstance(caught.value, KafkaAccessError)
