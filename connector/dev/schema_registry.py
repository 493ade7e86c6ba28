"""A real Confluent-compatible schema registry for tests: Apicurio Registry.

Apicurio's server is a Quarkus app published on Maven Central
(``io.apicurio:apicurio-registry-app``, ``tar.gz`` classifier ``all``); the
3.0.x line runs on Java 17 with in-memory storage and serves the Confluent
API under ``/apis/ccompat/v7``. Bound to 127.0.0.1 on a free port; the
global compatibility rule is set to BACKWARD.

CLI: ``python -m connector.dev.schema_registry run``.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from connector.dev.kafka_broker import _java, free_port
from connector.dev.maven import cache_dir, fetch_artifact, rss_bytes

log = logging.getLogger(__name__)

APICURIO_VERSION = "3.0.9"


def fetch() -> Path:
    """The unpacked app folder (downloaded and unpacked once)."""
    target = cache_dir() / f"apicurio-{APICURIO_VERSION}" / "app"
    runner = target / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
    if runner.exists():
        return target
    archive = fetch_artifact(f"apicurio-{APICURIO_VERSION}",
                            f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all")
    tmp = Path(tempfile.mkdtemp(dir=archive.parent))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    if target.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target


class SchemaRegistry:
    """Apicurio Registry on 127.0.0.1 (a context manager). ``url`` is the
    Confluent-compatible base URL."""

    def __init__(self, start_timeout: float = 90.0) -> None:
        self.port = free_port()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="apicurio-", suffix=".log")[1])
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def start(self) -> SchemaRegistry:
        app = fetch()
        started = time.monotonic()
        with open(self._log, "wb") as out:
            self._proc = subprocess.Popen(
                [_java(), "-Xmx512m", "-Dquarkus.http.host=127.0.0.1",
                 f"-Dquarkus.http.port={self.port}", "-Dquarkus.log.level=WARN",
                 "-Dapicurio.rest.deletion.artifact.enabled=true",
                 "-jar", str(app / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar")],
                stdout=out, stderr=subprocess.STDOUT, cwd=app, start_new_session=True)
        deadline = started + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("the schema registry exited:\n" + self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "/subjects", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        else:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError("the schema registry did not start:\n" + tail)
        self.set_compatibility("BACKWARD")
        self.start_seconds = time.monotonic() - started
        return self

    def set_compatibility(self, level: str) -> None:
        request = urllib.request.Request(
            self.url + "/config", method="PUT", data=json.dumps({"compatibility": level}).encode(),
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def rss_bytes(self) -> int:
        return rss_bytes(self._proc.pid if self._proc else None)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> SchemaRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["fetch"]:
        print(f"Apicurio Registry {APICURIO_VERSION} in {fetch()}")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SchemaRegistry() as registry:
        print(f"schema registry at {registry.url} (started in {registry.start_seconds:.1f} s, "
              f"RSS {registry.rss_bytes() >> 20} MiB)", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
