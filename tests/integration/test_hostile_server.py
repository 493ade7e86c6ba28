"""A hostile server: the connector stays bounded whatever Bybit (or a man in the
middle) sends. The connector runs as its own process against a scripted
WebSocket server and the real Kafka broker; its memory is read from /proc and
its series from its own /metrics.

* 50k distinct unknown topic names and 50k unconfigured symbols: series and
  memory stay bounded, nothing unconfigured lands in Kafka.
* a 100 MB frame (whole or in fragments): counted, dead-lettered by reference,
  never held whole.
* frames nested 100 .. 100k deep: each is written, dead-lettered or counted.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from connector.dev.consume import AvroDecoder, Message, read_all
from connector.dev.kafka_broker import KafkaBroker, free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONFIGURED = ("BTCUSDT", "ETHUSDT")
MiB = 1 << 20

Frame = str | bytes | list[str]  # a list is sent as one fragmented text message


@dataclass
class ScriptedServer:
    """A WebSocket server that acks subscribes, answers pings and sends what it is told."""

    server: Server
    clients: queue.Queue[ServerConnection] = field(default_factory=queue.Queue)
    subscribed: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}"

    def handler(self, ws: ServerConnection) -> None:
        self.clients.put(ws)
        try:
            for message in ws:
                msg = json.loads(message)
                if "ping" in msg:
                    ws.send(json.dumps({"pong": msg["ping"]}))
                elif msg.get("event") == "sub":
                    ws.send(json.dumps({**msg, "code": "0", "msg": "Success"}))
                    self.subscribed.set()
        except ConnectionClosed:
            pass

    def send(self, frames: Iterable[Frame], timeout: float = 30.0) -> None:
        """Send ``frames`` to the connected client (waits for it to subscribe)."""
        assert self.subscribed.wait(timeout), "the connector never subscribed"
        ws = self.clients.get(timeout=timeout)
        self.clients.put(ws)
        for frame in frames:
            ws.send(frame)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    holder: dict[str, ScriptedServer] = {}
    server = serve(lambda ws: holder["s"].handler(ws), "127.0.0.1", 0, max_size=None,
                   compression=None, ping_interval=None)
    holder["s"] = ScriptedServer(server)
    thread = threading.Thread(target=server.serve_forever, name="scripted-server")
    thread.start()
    yield holder["s"]
    server.shutdown()
    thread.join(timeout=10)


@dataclass
class RunningConnector:
    proc: subprocess.Popen[str]
    metrics_port: int
    prefix: str
    stderr: list[str] = field(default_factory=list)

    def scrape(self, timeout: float = 10.0) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())

    def status(self, key: str) -> int:
        """VmRSS / VmHWM of the connector process, in bytes."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        assert match, text
        return int(match.group(1)) * 1024

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        out = 0.0
        for line in self.scrape().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                out += float(line.rsplit(" ", 1)[1])
        return out

    def wait_total(self, name: str, at_least: float, timeout: float = 120.0,
                   **labels: str) -> float:
        deadline = time.monotonic() + timeout
        value = -1.0
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the connector exited:\n" + self.err()
            try:
                value = self.total(name, **labels)
            except (OSError, urllib.error.URLError):
                value = -1.0
            if value >= at_least:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{name}{labels} reached {value}, not {at_least}, within "
                             f"{timeout:.0f} s")

    def err(self) -> str:
        return "".join(self.stderr)


def start_connector(tmp_path: Path, server: ScriptedServer, bootstrap: str,
                    prefix: str) -> RunningConnector:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
bybit:
  urls: {{v1: "{server.url}/spot/quote/ws/v1"}}
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: "{prefix}.dead-letter"
metrics: {{host: 127.0.0.1, port: {port}}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [{", ".join(CONFIGURED)}]}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "connector", "--log-level", "WARNING", "run",
                             "--config", str(config)], stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    running = RunningConnector(proc, port, prefix)
    assert proc.stderr is not None
    stream = proc.stderr
    threading.Thread(target=lambda: running.stderr.extend(stream), daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the connector exited:\n" + running.err()
        try:
            running.scrape(timeout=2)
            break
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    assert server.subscribed.wait(30), "the connector never subscribed:\n" + running.err()
    return running


@pytest.fixture
def connector_factory(tmp_path: Path, scripted: ScriptedServer, kafka_broker: KafkaBroker,
                      topic_name: str) -> Iterator[RunningConnector]:
    running = start_connector(tmp_path, scripted, kafka_broker.bootstrap_servers, topic_name)
    yield running
    running.proc.terminate()
    try:
        running.proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        running.proc.wait(timeout=10)


def trade(symbol: str, trade_id: str, topic: str = "trade", **extra: Any) -> str:
    item = {"v": trade_id, "t": 1625562619577, "p": "34924.15", "q": "0.00027", "m": True,
            **extra}
    return json.dumps({"symbol": symbol, "symbolName": symbol, "topic": topic,
                       "params": {"realtimeInterval": "24h", "binary": "false"},
                       "data": [item], "f": False, "sendTime": 1626249138535})


def kafka(running: RunningConnector, bootstrap: str) -> tuple[list[Message], list[Message]]:
    trades_topic = f"{running.prefix}.v1.trade"
    dlq = f"{running.prefix}.dead-letter"
    got = read_all(bootstrap, [trades_topic, dlq], timeout=60)
    return got[trades_topic], got[dlq]


def series(text: str) -> int:
    return sum(1 for line in text.splitlines()
               if line.startswith("bybit_connector_") and not line.startswith("#"))


def label_values(text: str, label: str) -> set[str]:
    return set(re.findall(rf'[{{,]{label}="([^"]*)"', "\n".join(
        line for line in text.splitlines() if line.startswith("bybit_connector_"))))


# ---------------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_unknown_topics_and_symbols_stay_bounded(connector_factory: RunningConnector,
                                                 scripted: ScriptedServer,
                                                 kafka_broker: KafkaBroker) -> None:
    running = connector_factory

    def flood(start: int, n: int) -> Iterator[str]:
        for i in range(start, start + n):
            yield trade("BTCUSDT", f"u{i}", topic=f"topic{i}")
            yield trade(f"SYM{i}", f"s{i}")
            if i % 1000 == 0:
                yield trade("ETHUSDT", f"ok{i}")
        yield trade("BTCUSDT", f"last{start}")

    # A first small flood creates whatever bounded series unknown data has (topic="(unknown)").
    scripted.send(flood(0, 100))
    running.wait_total("bybit_connector_frames_received_total", 202)
    running.wait_total("bybit_connector_records_produced_total", 2)
    before_series, before_rss = series(running.scrape()), running.status("VmRSS")
    n = 50_000
    scripted.send(flood(100, n))
    received = running.wait_total("bybit_connector_frames_received_total", 202 + 2 * n + 51,
                                  timeout=300)
    running.wait_total("bybit_connector_records_produced_total", 2 + 51, timeout=60)
    started = time.monotonic()
    text = running.scrape(timeout=10)
    scrape_seconds = time.monotonic() - started
    after_series, after_rss = series(text), running.status("VmRSS")
    print(f"\nframes {received:.0f}; series {before_series} -> {after_series}; RSS "
          f"{before_rss / MiB:.0f} -> {after_rss / MiB:.0f} MiB (peak "
          f"{running.status('VmHWM') / MiB:.0f}); /metrics in {scrape_seconds * 1000:.0f} ms")

    assert after_series == before_series, "series grow with what the server sends"
    assert label_values(text, "symbol") <= set(CONFIGURED)
    assert label_values(text, "topic") <= {"trade", "(unknown)"}
    assert after_rss - before_rss < 40 * MiB
    assert scrape_seconds < 5
    assert running.total("bybit_connector_unrouted_events_total") == 2 * (n + 100)
    assert running.total("bybit_connector_unrouted_events_total", topic="(unknown)") == n + 100
    trades, dead = kafka(running, kafka_broker.bootstrap_servers)
    decoder = AvroDecoder()
    symbols = {decoder.decode("v1_trade", m)["symbol"] for m in trades}
    assert symbols == set(CONFIGURED)
    assert len(trades) == 53
    assert dead == []


@pytest.mark.parametrize("fragmented", [False, True], ids=["whole", "fragments"])
def test_a_100_mb_frame_is_refused_while_reading(connector_factory: RunningConnector,
                                                 scripted: ScriptedServer,
                                                 kafka_broker: KafkaBroker,
                                                 fragmented: bool) -> None:
    running = connector_factory
    scripted.send([trade("BTCUSDT", "before")])
    running.wait_total("bybit_connector_records_produced_total", 1)
    before_peak = running.status("VmHWM")
    head = '{"symbol":"BTCUSDT","topic":"trade","data":[{"x":"'
    big = head + "A" * (100 * MiB) + '"}]}'
    frame: Frame = ([big[i:i + MiB] for i in range(0, len(big), MiB)] if fragmented
                    else big)
    scripted.send([frame, trade("BTCUSDT", "after")])
    running.wait_total("bybit_connector_records_produced_total", 2, timeout=120)
    peak = running.status("VmHWM")
    print(f"\npeak RSS {before_peak / MiB:.0f} -> {peak / MiB:.0f} MiB")
    assert peak - before_peak < 60 * MiB
    assert running.total("bybit_connector_undecodable_frames_total",
                         reason="frame_too_large") == 1
    assert running.proc.poll() is None
    trades, dead = kafka(running, kafka_broker.bootstrap_servers)
    assert len(trades) == 2
    assert len(dead) == 1
    letter = dead[0]
    assert letter.headers["dlq.undecodable_reason"] == b"frame_too_large"
    assert letter.value.startswith(head.encode())
    assert len(letter.value) <= 4096
    assert str(len(big)) in letter.headers["dlq.detail"].decode()


DEPTHS = (100, 500, 900, 950, 960, 970, 975, 980, 985, 990, 995, 1000, 1100, 2000, 10_000,
          100_000)


def test_deeply_nested_frames_are_written_dead_lettered_or_counted(
        connector_factory: RunningConnector, scripted: ScriptedServer,
        kafka_broker: KafkaBroker) -> None:
    running = connector_factory

    def nested(depth: int) -> str:
        # Lists nested `depth` deep, in a key the schema does not know (it lands in `extra`).
        return trade("BTCUSDT", f"d{depth}", nest="@").replace('"@"', "[" * depth + "]" * depth)

    scripted.send([nested(d) for d in DEPTHS] + [trade("BTCUSDT", "end")])
    running.wait_total("bybit_connector_frames_received_total", 1)
    deadline = time.monotonic() + 60
    trades: list[Message] = []
    dead: list[Message] = []
    while time.monotonic() < deadline:
        trades, dead = kafka(running, kafka_broker.bootstrap_servers)
        if any(b"end" in m.value for m in trades):
            break
        time.sleep(0.5)
    decoder = AvroDecoder()
    written = {decoder.decode("v1_trade", m)["trade_id"] for m in trades}
    undecodable = running.total("bybit_connector_undecodable_frames_total")
    for depth in DEPTHS:
        tag = f'"v": "d{depth}"'.encode()
        lettered = any(tag in m.value for m in dead)
        assert f"d{depth}" in written or lettered, f"depth {depth}: neither written nor " \
                                                   "dead-lettered"
    assert len(written) + len(dead) == len(DEPTHS) + 1
    assert undecodable + running.total("bybit_connector_dead_letter_records_total",
                                       reason="mapping_failed") == len(dead)
    assert "event handler failed" not in running.err()
