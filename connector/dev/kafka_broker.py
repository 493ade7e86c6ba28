"""A real single-node Apache Kafka broker (KRaft) for tests, the demo and benchmarks.

The broker is Apache Kafka's own jar, ``org.apache.kafka:kafka_2.13`` with
its runtime dependencies and a log4j2 binding, fetched once from Maven
Central into the cache (see ``maven.py``). Each ``KafkaBroker`` formats its
own KRaft storage in a temp dir and listens on 127.0.0.1 with free ports.

CLI: ``python -m connector.dev.kafka_broker fetch`` (download only) or
``python -m connector.dev.kafka_broker run [--port N]``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from connector.dev.maven import fetch_classpath, rss_bytes

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.24.3"
ARTIFACTS = [
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
    ("org.slf4j", "slf4j-api", "2.0.16"),
]
HEAP = "-Xmx512m"


def fetch() -> Path:
    """The folder of broker jars (downloaded on first use)."""
    return fetch_classpath(f"kafka-{KAFKA_VERSION}", ARTIFACTS)


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, an id beginning with ``-`` is drawn
    again (1 in 64 would): command lines and tools read such a value as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not on PATH (Java 17+ is needed for the Kafka broker)")
    return java


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could not bind ``host:port`` (as Java would, SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


class KafkaBroker:
    """One broker+controller process on 127.0.0.1 (a context manager).

    ``bootstrap_servers`` is ``"127.0.0.1:PORT"``. ``restart()`` stops and
    starts it again on the same ports with the same data (for outage tests).

    It only reports ready when the broker answering on its port is this one:
    its ports must be free before Java starts, its process alive, and the
    cluster id the broker reports the one its storage was formatted with
    (another broker already on the port would otherwise answer for it).
    """

    def __init__(self, port: int | None = None, partitions: int = 1,
                 start_timeout: float = 90.0, extra_properties: dict[str, str] | None = None
                 ) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()
        self.partitions = partitions
        self.start_timeout = start_timeout
        self.extra_properties = extra_properties or {}
        self._dir = Path(tempfile.mkdtemp(prefix="kafka-broker-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None
        self.cluster_id: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _classpath(self) -> str:
        return str(fetch() / "*")

    def _write_config(self) -> Path:
        self._dir.mkdir(parents=True, exist_ok=True)  # again after a failed first start
        props = self._dir / "server.properties"
        props.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={self._dir / "data"}
num.partitions={self.partitions}
auto.create.topics.enable=true
offsets.topic.replication.factor=1
# One partition for the group offsets (default 50): the first consumer group on a
# fresh broker waits for them all to load (NotCoordinator) on a busy machine.
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
""" + "".join(f"{k}={v}\n" for k, v in self.extra_properties.items()))
        (self._dir / "log4j2.properties").write_text(f"""\
status = error
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {self._dir / "server.log"}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
""")
        return props

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [_java(), HEAP, "-Xss1m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}",
                "-cp", self._classpath(), main, *args]

    def check_ports_free(self) -> None:
        """Raise if another process listens on our ports (e.g. another broker)."""
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise RuntimeError(f"port {port} on 127.0.0.1 is in use (another broker?)")

    def format_storage(self, cluster_id: str) -> None:
        """Format this broker's KRaft storage with ``cluster_id`` (raises ``RuntimeError``).

        The id is passed as ``--cluster-id=<id>``, one argument, so an id that
        begins with ``-`` is still read as the id, not as an option.
        """
        fmt = subprocess.run(
            self._java_cmd("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(self._dir / "server.properties")),
            capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise RuntimeError(f"formatting KRaft storage failed:\n{fmt.stdout}{fmt.stderr}")

    def start(self) -> KafkaBroker:
        """Start and wait until ready; on any failure no Java process is left running,
        and a broker that never started leaves no temp dir behind."""
        fresh = not (self._dir / "data" / "meta.properties").exists()
        try:
            return self._start()
        except BaseException:
            if fresh:
                self.stop()
            raise

    def _start(self) -> KafkaBroker:
        started = time.monotonic()
        self.check_ports_free()
        props = self._write_config()
        if not (self._dir / "data" / "meta.properties").exists():
            # A preset id: a node joining a multi-node cluster (``kafka_cluster.py``).
            self.cluster_id = self.cluster_id or new_cluster_id()
            self.format_storage(self.cluster_id)
        elif self.cluster_id is None:
            meta = (self._dir / "data" / "meta.properties").read_text()
            self.cluster_id = next((line.split("=", 1)[1].strip() for line in meta.splitlines()
                                    if line.startswith("cluster.id=")), None)
        out = open(self._dir / "stdout.log", "ab")  # noqa: SIM115 (owned by the process)
        self._proc = subprocess.Popen(self._java_cmd("kafka.Kafka", str(props)), stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        try:
            self._wait_ready(started)
        except BaseException:
            self._terminate()
            raise
        self.start_seconds = time.monotonic() - started
        log.info("Kafka %s ready at %s in %.1f s", KAFKA_VERSION, self.bootstrap_servers,
                 self.start_seconds)
        return self

    def _cluster_answering(self) -> str | None:
        """The cluster id of whichever broker answers on our port (None: no answer)."""
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            # Short bootstrap and reconnect backoff: the client's defaults (30 s each)
            # kept one probe waiting up to 30 s after a restarted broker answered.
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                     request_timeout_ms=3000, bootstrap_timeout_ms=3000,
                                     reconnect_backoff_max_ms=300)
            try:
                answered = admin.describe_cluster().get("cluster_id")
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError):
            return None
        return str(answered) if answered is not None else None

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.start_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            answered = self._cluster_answering()
            if answered is not None and answered != self.cluster_id:
                # Ours cannot have bound the port: another broker holds it.
                raise RuntimeError(f"port {self.port} on 127.0.0.1 is served by another broker "
                                   f"(cluster {answered}), not this broker "
                                   f"(cluster {self.cluster_id})")
            if self._proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with {self._proc.returncode}:\n"
                                   + self.log_tail())
            if answered is not None:
                return
            time.sleep(0.3)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"Kafka did not accept metadata requests within "
                           f"{self.start_timeout:.0f} s:\n" + tail)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for name in ("stdout.log", "server.log"):
            path = self._dir / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    def _terminate(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), keeping the data: a crash."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (cleanly), optionally stay down, start again on the same ports and data."""
        self._terminate()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        """Stop the broker and delete its data."""
        self._terminate()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.dev.kafka_broker",
                                     description="A local single-node Kafka broker (KRaft).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker from Maven Central (cached)")
    run = sub.add_parser("run", help="run a broker until SIGINT/SIGTERM")
    run.add_argument("--port", type=int, default=None, help="listener port (default: free)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Until Java listens, the readiness probe's client logs every refused connection;
    # start() itself reports a broker that never comes up.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if args.command == "fetch":
        print(f"Kafka {KAFKA_VERSION} broker jars in {fetch()}")
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    broker = KafkaBroker(port=args.port)
    try:
        broker.start()
    except RuntimeError as exc:
        broker.stop()
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    try:
        print(f"Kafka {KAFKA_VERSION} at {broker.bootstrap_servers} "
              f"(started in {broker.start_seconds:.1f} s, RSS {broker.rss_bytes() >> 20} MiB)",
              flush=True)
        stop.wait()
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
