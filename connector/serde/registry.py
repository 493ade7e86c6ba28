"""A small client for a Confluent-compatible Schema Registry.

Only what a producer needs: register (or look up) a value schema under the
TopicNameStrategy subject ``<topic>-value`` and cache the id. Speaks plain
HTTP with urllib (no extra dependency); blocking; called at startup and when
a new Kafka topic is first used, never per record.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from connector.errors import SchemaRegistryError
from connector.ops import metrics

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the value schema of ``topic`` lives under ``<topic>-value``."""
    return f"{topic}-value"


class SchemaRegistryClient:
    """Registers/looks up schemas; caches ``(subject, schema) -> id``.

    Raises ``SchemaRegistryError`` with the registry's own message when it
    refuses a schema (HTTP 409: incompatible under the subject's rule; 422:
    invalid) or cannot be reached.
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._auth: str | None = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"
        self._cache: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` (Avro JSON text) under ``subject``; return its id."""
        return self._cached("register", subject, schema, f"/subjects/{_q(subject)}/versions")

    def lookup(self, subject: str, schema: str) -> int:
        """Find the id of an already registered ``schema`` under ``subject``."""
        return self._cached("lookup", subject, schema, f"/subjects/{_q(subject)}")

    def _cached(self, operation: str, subject: str, schema: str, path: str) -> int:
        key = (subject, schema)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        body = self._request("POST", path, {"schema": schema, "schemaType": "AVRO"},
                             operation, subject)
        schema_id = int(body["id"])
        with self._lock:
            self._cache[key] = schema_id
        return schema_id

    def _request(self, method: str, path: str, payload: dict[str, Any], operation: str,
                 subject: str) -> dict[str, Any]:
        data = json.dumps(payload).encode()
        request = urllib.request.Request(self._url + path, data=data, method=method)
        request.add_header("Content-Type", CONTENT_TYPE)
        request.add_header("Accept", CONTENT_TYPE)
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                result: dict[str, Any] = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            metrics.schema_registry_requests_total.labels(operation, "error").inc()
            detail = _error_message(exc)
            if exc.code == 409:
                raise SchemaRegistryError(
                    f"schema registry rejected the schema for subject {subject!r} as "
                    f"incompatible with its compatibility rule: {detail}") from exc
            raise SchemaRegistryError(
                f"schema registry {operation} for subject {subject!r} failed: "
                f"HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            metrics.schema_registry_requests_total.labels(operation, "error").inc()
            raise SchemaRegistryError(
                f"schema registry at {self._url} unreachable: {exc}") from exc
        metrics.schema_registry_requests_total.labels(operation, "ok").inc()
        log.info("schema registry %s: subject %s -> id %s", operation, subject, result.get("id"))
        return result


def _q(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return exc.reason if isinstance(exc.reason, str) else str(exc)
    return str(body.get("message") or body.get("detail") or body)
