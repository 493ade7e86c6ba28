"""One error hierarchy for the whole package.

Third-party exceptions are converted at the boundary that calls the library
(chained with ``from exc``) so callers only ever catch ``ConnectorError``.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ConnectorError):
    """The configuration is invalid. ``path`` is the YAML path at fault."""

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        self.path = path
        self.message = message
        self.hint = hint
        text = f"{path}: {message}" if path else message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class SerializationError(ConnectorError):
    """A record could not be encoded with its Avro schema."""


class SchemaRegistryError(ConnectorError):
    """The schema registry refused a schema or could not be reached."""


class DeliveryError(ConnectorError):
    """Kafka did not accept a record after the client's own retries."""


class KafkaAccessError(DeliveryError):
    """A Kafka broker answered but will not let this client in (TLS trust,
    security protocol, SASL mechanism or credentials). The same settings fail
    the same way on every retry; the message names the cause, never a secret."""
