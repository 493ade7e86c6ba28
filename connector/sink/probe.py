"""The start-up probe: can this client reach Kafka *and be let in*?

Before any Kafka client is built, one connection per attempt walks the
steps a client takes: TCP connect, the TLS handshake (``SSL``,
``SASL_SSL``), an ApiVersions request, and the SASL login (``PLAIN``,
``SCRAM-SHA-256/512``). The first step that fails names the cause in one
line: no listener, a certificate ``ssl_cafile`` does not trust, a TLS
listener spoken to in plaintext, a plaintext listener spoken to in TLS,
a mechanism the broker does not offer, a refused login.

Why not let the client find out: kafka-python and librdkafka both report
such failures as a bootstrap timeout (the cause only in their own debug
logs, sometimes not even there), and both retry several times a second.
A probe that fails on one connection keeps the broker's side quiet and the
connector's log to one line naming the cause. Secrets are sent, never
written: no message here contains the password.

Hand-written on purpose: only the four requests above, in their oldest
versions every Kafka since 1.0 answers (header v1, response header v0).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from typing import Any

from connector.errors import DeliveryError, KafkaAccessError

CLIENT_ID = b"bybit-kafka-connector-probe"
API_VERSIONS, METADATA, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 3, 17, 36
MAX_FRAME = 16 * 1024 * 1024
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def probe(config: Any, timeout: float) -> None:
    """Raise unless one of ``config.bootstrap_servers`` lets this client in.

    ``config`` is a ``KafkaConfig``. Blocks up to ``timeout`` seconds per
    address and step. Raises ``KafkaAccessError`` (a broker answered and
    refused these settings: retrying them will fail the same way) or
    ``DeliveryError`` (no broker answered).
    """
    unreachable: list[str] = []
    refused: KafkaAccessError | None = None
    for address in config.bootstrap_servers:
        try:
            _probe_one(address, config.security, timeout)
            return
        except KafkaAccessError as exc:
            refused = refused or exc
        except (OSError, ValueError) as exc:
            unreachable.append(f"{address}: {exc}")
    if refused is not None:
        raise refused
    raise DeliveryError("cannot connect: " + "; ".join(unreachable))


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "localhost", int(port)


def _probe_one(address: str, sec: Any, timeout: float) -> None:
    host, port = split_address(address)
    protocol = sec.security_protocol
    with socket.create_connection((host, port), timeout=timeout) as raw:
        raw.settimeout(timeout)
        sock: socket.socket = raw
        if protocol in TLS_PROTOCOLS:
            sock = _tls(raw, host, address, sec)
        try:
            _check(_request(sock, API_VERSIONS, 0, b""), address, "ApiVersions")
        except _NotKafka as exc:
            if protocol not in TLS_PROTOCOLS and _speaks_tls(host, port, timeout):
                raise KafkaAccessError(
                    f"Kafka at {address} is a TLS listener but "
                    f"kafka.security.security_protocol is {protocol} "
                    "(use SSL or SASL_SSL, with ssl_cafile)") from exc
            raise KafkaAccessError(f"{address} does not answer as Kafka does "
                                   f"(security_protocol {protocol}: {exc})") from exc
        if protocol.startswith("SASL"):
            _login(sock, address, sec)
        try:  # a SASL listener closes here on a client that did not log in
            _request(sock, METADATA, 1, struct.pack(">i", 0))
        except _NotKafka as exc:
            raise KafkaAccessError(
                f"Kafka at {address} closed the connection after the handshake: the "
                f"listener expects another security_protocol than {protocol} "
                "(SASL_PLAINTEXT or SASL_SSL?)") from exc


def _ssl_context(sec: Any) -> ssl.SSLContext:
    """As the clients build theirs: ``ssl_cafile`` or the system's CAs, a
    client certificate when given, hostname checks unless turned off."""
    ctx = ssl.create_default_context(cafile=sec.ssl_cafile or None)
    ctx.check_hostname = bool(sec.ssl_check_hostname)
    if sec.ssl_certfile:
        ctx.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile or None,
                            sec.ssl_password.get() if sec.ssl_password else None)
    return ctx


def _tls(raw: socket.socket, host: str, address: str, sec: Any) -> socket.socket:
    trust = (f"kafka.security.ssl_cafile ({sec.ssl_cafile})" if sec.ssl_cafile
             else "the system's CA certificates (kafka.security.ssl_cafile is not set)")
    try:
        ctx = _ssl_context(sec)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaAccessError(f"TLS settings cannot be loaded: {exc}") from exc
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessError(
            f"TLS: the certificate of Kafka at {address} is not trusted by {trust}: "
            f"{exc.verify_message}") from exc
    except ssl.SSLError as exc:
        raise KafkaAccessError(
            f"TLS handshake with Kafka at {address} failed ({exc.reason or exc}): is it a "
            f"TLS listener? (security_protocol is {sec.security_protocol})") from exc
    except (ConnectionError, TimeoutError) as exc:
        raise KafkaAccessError(
            f"TLS handshake with Kafka at {address} failed ({exc or type(exc).__name__}): "
            f"is it a TLS listener? (security_protocol is {sec.security_protocol})") from exc


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


# -- the wire -----------------------------------------------------------------------------


class _NotKafka(Exception):
    """The peer closed the connection or answered with something not Kafka."""


_correlation = iter(range(1, 2**31))


def _request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    """Send one request (header v1), return the response body after its correlation id."""
    correlation = next(_correlation)
    header = struct.pack(">hhih", api_key, version, correlation, len(CLIENT_ID)) + CLIENT_ID
    sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
    head = _recv(sock, 4)
    if head[:2] == b"\x15\x03":  # a TLS alert record: a TLS peer read our plaintext
        raise _NotKafka("a TLS alert came back")
    (size,) = struct.unpack(">i", head)
    if not 4 <= size <= MAX_FRAME:
        raise _NotKafka(f"a frame of {size} bytes")
    data = _recv(sock, size)
    if struct.unpack(">i", data[:4])[0] != correlation:
        raise _NotKafka("a response to another request")
    return data[4:]


def _recv(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        try:
            chunk = sock.recv(left)
        except ConnectionResetError as exc:
            raise _NotKafka("the connection was reset") from exc
        except TimeoutError as exc:
            raise _NotKafka("no answer") from exc
        if not chunk:
            raise _NotKafka("the connection was closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _check(body: bytes, address: str, what: str) -> None:
    (code,) = struct.unpack(">h", body[:2])
    if code != 0:
        raise KafkaAccessError(f"Kafka at {address} answered {what} with error code {code}")


def _string(data: bytes, pos: int) -> tuple[str | None, int]:
    (size,) = struct.unpack(">h", data[pos:pos + 2])
    if size < 0:
        return None, pos + 2
    return data[pos + 2:pos + 2 + size].decode(errors="replace"), pos + 2 + size


# -- SASL ---------------------------------------------------------------------------------


def _login(sock: socket.socket, address: str, sec: Any) -> None:
    mechanism = sec.sasl_mechanism
    user = sec.sasl_plain_username or ""
    who = f"SASL {mechanism} login of user {user!r} at Kafka {address}"
    name = mechanism.encode()
    try:
        body = _request(sock, SASL_HANDSHAKE, 1, struct.pack(">h", len(name)) + name)
    except _NotKafka as exc:
        raise KafkaAccessError(f"{who}: the listener does not take SASL ({exc}); "
                               "is it a SASL listener?") from exc
    (code, count) = struct.unpack(">hi", body[:6])
    if code != 0:
        offered, pos = [], 6
        for _ in range(max(0, count)):
            item, pos = _string(body, pos)
            offered.append(item or "")
        raise KafkaAccessError(f"{who}: the broker does not enable {mechanism} (it offers "
                               f"{', '.join(offered) or 'none'}); set "
                               "kafka.security.sasl_mechanism")
    password = sec.sasl_plain_password.get() if sec.sasl_plain_password else ""
    try:
        if mechanism == "PLAIN":
            _authenticate(sock, who, f"\0{user}\0{password}".encode())
        else:
            _scram(sock, who, SCRAM_HASHES[mechanism], user, password)
    except _NotKafka as exc:
        raise KafkaAccessError(f"{who} failed: the broker closed the connection ({exc}); "
                               "check sasl_plain_username and the password") from exc


def _authenticate(sock: socket.socket, who: str, message: bytes) -> bytes:
    """One SaslAuthenticate v0 round; the server's bytes, or the refusal raised."""
    body = _request(sock, SASL_AUTHENTICATE, 0, struct.pack(">i", len(message)) + message)
    (code,) = struct.unpack(">h", body[:2])
    text, pos = _string(body, 2)
    if code != 0:
        raise KafkaAccessError(f"{who} refused: {text or f'error code {code}'} (check "
                               "kafka.security.sasl_plain_username and the password)")
    (size,) = struct.unpack(">i", body[pos:pos + 4])
    return body[pos + 4:pos + 4 + max(0, size)]


def _scram(sock: socket.socket, who: str, hash_name: str, user: str, password: str) -> None:
    """RFC 5802 SCRAM, as Kafka runs it (no channel binding), server proof checked."""
    nonce = secrets.token_urlsafe(24)
    first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
    server_first = _authenticate(sock, who, f"n,,{first_bare}".encode()).decode()
    fields = _scram_fields(server_first)
    if "e" in fields or not fields.get("r", "").startswith(nonce):
        raise KafkaAccessError(f"{who} refused: {fields.get('e', 'bad server nonce')}")
    client_final, server_signature = scram_final(hash_name, password, first_bare, server_first)
    server_final = _scram_fields(_authenticate(sock, who, client_final.encode()).decode())
    if "e" in server_final:
        raise KafkaAccessError(f"{who} refused: {server_final['e']}")
    if base64.b64decode(server_final.get("v", "")) != server_signature:
        raise KafkaAccessError(f"{who}: the broker did not prove it knows the credential")


def scram_final(hash_name: str, password: str, first_bare: str, server_first: str
                ) -> tuple[str, bytes]:
    """The client-final message and the server signature to expect (RFC 5802 §3)."""
    fields = _scram_fields(server_first)
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(fields["s"]),
                                 int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(hash_name, client_key).digest(), auth_message,
                            hash_name)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    server_key = hmac.digest(salted, b"Server Key", hash_name)
    return (f"{without_proof},p={proof.decode()}",
            hmac.digest(server_key, auth_message, hash_name))


def _scram_fields(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)

