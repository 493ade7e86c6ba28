"""The metrics/health HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``.

* ``/healthz`` (liveness): 200 while the supervisor loop has ticked within
  ``stuck_after`` seconds; 503 otherwise (a stuck process should be restarted).
* ``/readyz`` (readiness): 200 when Kafka is reachable and every connection is
  up and fully subscribed; 503 otherwise. The JSON body says what is not.
* ``/metrics``: the Prometheus exposition of the default registry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from connector.errors import ConnectorError

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], dict[str, Any]]


class Liveness:
    """Ticked by the supervisor loop; stale ticks mean the process is stuck."""

    def __init__(self, stuck_after: float = 30.0) -> None:
        self.stuck_after = stuck_after
        self._last = time.monotonic()

    def tick(self) -> None:
        self._last = time.monotonic()

    def status(self) -> tuple[bool, float]:
        age = time.monotonic() - self._last
        return age < self.stuck_after, age


class HealthServer:
    """A small threaded HTTP server (context manager); ``stop()`` shuts it down."""

    def __init__(self, host: str, port: int, liveness: Liveness,
                 readiness: ReadinessCheck) -> None:
        handler = _make_handler(liveness, readiness)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except (OSError, OverflowError) as exc:  # port taken, address not local, bad port
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConnectorError(f"metrics.port: cannot listen on {host}:{port}: {reason}") \
                from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("metrics and health on port %d (/metrics /healthz /readyz)", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(liveness: Liveness, readiness: ReadinessCheck) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, age = liveness.status()
                body = {"alive": ok, "seconds_since_last_tick": round(age, 3)}
                self._json(200 if ok else 503, body)
            elif path == "/readyz":
                body = readiness()
                self._json(200 if body.get("ready") else 503, body)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, (json.dumps(body, indent=1) + "\n").encode(), "application/json")

        def _send(self, code: int, payload: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health: " + format, *args)

    return Handler
