"""Throw-away TLS material for the dev broker's SASL_SSL listener.

A fresh CA and a server certificate signed by it, made in milliseconds
with ``cryptography`` (no JVM start per ``keytool`` step). The CA exists
only for one broker's life: clients trust ``ca_file``; a second, unrelated
CA (``make_ca`` again) is what a client with the wrong trust store holds.

Files are PEM, the format both Kafka (``ssl.keystore.type=PEM``) and the
Python clients read. Keys are EC P-256 (fast to make), unencrypted, and
live in the broker's private temp dir.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIFETIME = dt.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Where one listener's TLS files are."""

    ca_file: Path  # the CA certificate: what a client trusts (kafka.security.ssl_cafile)
    keystore_file: Path  # the server's private key and certificate chain, for Kafka


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(folder: Path, common_name: str = "throw-away dev CA") -> Path:
    """A CA certificate alone (PEM) in ``folder/ca.pem``: one that signed nothing
    a broker serves, for testing a client that trusts the wrong CA."""
    _key_unused, cert = _ca(common_name)
    return _write(folder / "ca.pem", _pem(cert))


def make_server_tls(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
                    ) -> ServerTls:
    """A new CA and a server certificate it signs for ``hosts`` (IPs or DNS
    names, as subject alternative names, so hostname checks pass)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_key, ca_cert = _ca("throw-away dev CA")
    key = _key()
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + LIFETIME)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    # Kafka's PEM key store: a PKCS#8 key, then the chain from the leaf up.
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ServerTls(ca_file=_write(folder / "ca.pem", _pem(ca_cert)),
                     keystore_file=_write(folder / "server.pem",
                                          key_pem + _pem(cert) + _pem(ca_cert)))
