"""The dev broker with a second listener as production runs Kafka: SASL_SSL.

``SaslSslBroker`` is a ``KafkaBroker`` (its PLAINTEXT listener stays, for
tools and the inter-broker link) plus a SASL_SSL listener on its own port:
TLS with a throw-away CA made at start (``tls.py``) and one SCRAM-SHA-512
user (who may also log in with SCRAM-SHA-256 or PLAIN). Clients connect
with ``bootstrap_servers=sasl_bootstrap_servers``, ``ssl_cafile=tls.ca_file``
and ``username`` / ``password``.

The user is created through the admin API once the broker answers, then
start waits until a SCRAM login over TLS succeeds, so a test never meets a
listener that is up before its credentials are.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

from connector.dev.kafka_broker import KafkaBroker, free_port, port_in_use
from connector.dev.tls import ServerTls, make_server_tls

MECHANISM: Final = "SCRAM-SHA-512"
# Also enabled, for the same user and password: the start-up probe's other logins.
OTHER_MECHANISMS = ("SCRAM-SHA-256", "PLAIN")


class SaslSslBroker(KafkaBroker):
    """A broker with PLAINTEXT and SASL_SSL (SCRAM-SHA-512) listeners (a context manager)."""

    def __init__(self, username: str = "connector", password: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.sasl_port = free_port()
        self.tls: ServerTls | None = None
        # Appended after the PLAINTEXT broker's own lines: later keys win in
        # Java properties files, so these replace its listener settings.
        self.extra_properties = {**self._listener_properties(), **self.extra_properties}

    @property
    def sasl_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def _listener_properties(self) -> dict[str, str]:
        plain, ctrl, sasl = self.port, self.controller_port, self.sasl_port
        store = self._dir / "tls" / "server.pem"
        prefix = "listener.name.sasl_ssl."
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{ctrl},"
                         f"SASL_SSL://127.0.0.1:{sasl}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl}",
            "listener.security.protocol.map":
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": ",".join((MECHANISM, *OTHER_MECHANISMS)),
            f"{prefix}sasl.enabled.mechanisms": ",".join((MECHANISM, *OTHER_MECHANISMS)),
            f"{prefix}scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}scram-sha-256.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{prefix}plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{self.username}="{self.password}";',
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.location": str(store),
            f"{prefix}ssl.client.auth": "none",
        }

    def client_settings(self) -> dict[str, Any]:
        """kafka-python client kwargs for the SASL_SSL listener (the right secret)."""
        assert self.tls is not None, "start the broker first"
        return {"bootstrap_servers": self.sasl_bootstrap_servers,
                "security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM,
                "sasl_plain_username": self.username, "sasl_plain_password": self.password,
                "ssl_cafile": str(self.tls.ca_file)}

    def check_ports_free(self) -> None:
        super().check_ports_free()
        if port_in_use(self.sasl_port):
            raise RuntimeError(f"port {self.sasl_port} on 127.0.0.1 is in use (another broker?)")

    def start(self) -> SaslSslBroker:
        """Make the TLS files (first start only), start, add the user, await a login."""
        if self.tls is None:
            self.tls = make_server_tls(self._dir / "tls")
        try:
            super().start()
            self._add_user()
            self._await_login()
        except BaseException:
            self.stop()
            raise
        return self

    def _add_user(self) -> None:
        from kafka.admin import KafkaAdminClient, ScramMechanism, UserScramCredentialUpsertion

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            # One mechanism per request: Kafka refuses a user altered twice in one.
            for mechanism in (ScramMechanism.SCRAM_SHA_512, ScramMechanism.SCRAM_SHA_256):
                errors = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
                    self.username, mechanism, self.password)])
                if errors.get(self.username):
                    raise RuntimeError(f"adding SCRAM user {self.username} ({mechanism.name}): "
                                       f"{errors[self.username]}")
        finally:
            admin.close()

    def _await_login(self, timeout: float = 30.0) -> None:
        """Until a SCRAM login over TLS succeeds (the credential reaches the
        listener a moment after the controller commits it)."""
        from connector.config.model import KafkaConfig, KafkaSecurity, Secret
        from connector.errors import DeliveryError
        from connector.sink.probe import probe

        assert self.tls is not None
        config = KafkaConfig(bootstrap_servers=[self.sasl_bootstrap_servers],
                             security=KafkaSecurity(
                                 security_protocol="SASL_SSL", sasl_mechanism=MECHANISM,
                                 sasl_plain_username=self.username,
                                 sasl_plain_password=Secret(self.password),
                                 ssl_cafile=str(self.tls.ca_file)))
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe(config, 3.0)
                return
            except DeliveryError as exc:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"no SCRAM login over TLS on {self.sasl_bootstrap_servers}"
                                       f" within {timeout:.0f} s: {exc}\n"
                                       + self.log_tail()) from exc
                time.sleep(0.2)
