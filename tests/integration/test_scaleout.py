"""Scale-out against a real Kafka broker and the local exchange: connector
processes (``python -m connector run``) share 300 subscriptions through
Kafka's consumer-group protocol; the exchange counts who streams what.

One scenario, in phases, because each phase starts from the previous one:
three replicas split the subscriptions with no overlap; ``kill -9`` of one
moves its shards to the others within 15 s; a fourth replica takes shards
over without stopping the ones that do not move; afterwards Kafka holds no
trade twice and the trades lost are only those of the kill's window.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connector.dev.consume import AvroDecoder, read_all
from connector.dev.kafka_broker import KafkaBroker
from connector.exchange import ExchangeServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = [f"S{i:03d}USDT" for i in range(150)]
SHARDS = 12
EXPECTED = {f"v1 {topic} {s}" for s in SYMBOLS for topic in ("trade", "realtimes")}
HANDOVER_LIMIT = 15.0  # seconds, after kill -9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    samples: list[float] = field(default_factory=list)

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return dict(json.load(r))
        except urllib.error.HTTPError as exc:
            return dict(json.load(exc))
        except OSError:
            return None

    def shards(self) -> set[int]:
        body = self.status() or {}
        return set(body.get("coordination", {}).get("shards_owned", []))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def exchange() -> Iterator[ExchangeServer]:
    with ExchangeServer(port=0, rate=1, record_frames=2_000_000) as server:
        yield server


def write_config(tmp_path: Path, exchange: ExchangeServer, bootstrap: str, prefix: str,
                 group: str, port: int, symbols: list[str] = SYMBOLS,
                 coordination: bool = True) -> Path:
    path = tmp_path / f"config-{port}.yaml"
    listed = ", ".join(symbols)
    coord = f"coordination: {{group: {group}, shards: {SHARDS}}}" if coordination else ""
    path.write_text(f"""
bybit:
  urls: {{v1: "{exchange.url}/spot/quote/ws/v1"}}
kafka:
  bootstrap_servers: ["{bootstrap}"]
  topic_template: "{prefix}.{{stream}}.{{topic}}"
  dead_letter_topic: {prefix}.dead-letter
metrics: {{host: 127.0.0.1, port: {port}}}
{coord}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [{listed}]}}
  - {{stream: v1, topic: realtimes, symbols: [{listed}]}}
""")
    return path


def start_replica(tmp_path: Path, name: str, config: Callable[[int], Path]) -> Replica:
    port = free_port()
    path = config(port)
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen([sys.executable, "-m", "connector", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Replica(name, port, proc, log)


def held(exchange: ExchangeServer) -> Counter[str]:
    return Counter({k: v for k, v in exchange.subscriptions().items() if k in EXPECTED})


def wait_for(what: str, check: Callable[[], bool], timeout: float,
             replicas: list[Replica]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    logs = "\n".join(f"--- {r.name}\n{r.log.read_text()[-3000:]}" for r in replicas)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def all_streaming_once(exchange: ExchangeServer) -> bool:
    h = held(exchange)
    return set(h) == EXPECTED and set(h.values()) == {1}


def stable(replicas: list[Replica]) -> bool:
    """Every replica ready, the shards split among them with no overlap."""
    owned = []
    for r in replicas:
        body = r.status()
        if body is None or not body.get("ready"):
            return False
        owned.append(set(body["coordination"]["shards_owned"]))
    return sum(len(o) for o in owned) == SHARDS and set().union(*owned) == set(range(SHARDS))


def test_replicas_share_subscriptions_and_take_over(kafka_broker: KafkaBroker,
                                                    exchange: ExchangeServer,
                                                    tmp_path: Path) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    prefix = f"scale.{uuid.uuid4().hex[:6]}"
    group = f"scale-{uuid.uuid4().hex[:6]}"

    def config(port: int) -> Path:
        return write_config(tmp_path, exchange, bootstrap, prefix, group, port)

    replicas = [start_replica(tmp_path, f"r{i}", config) for i in range(3)]
    try:
        # Phase 1: three replicas, every subscription streamed by exactly one of them.
        wait_for("3 replicas to split 300 subscriptions", lambda: all_streaming_once(exchange)
                 and stable(replicas), 90, replicas)
        owned = {r.name: r.shards() for r in replicas}
        assert all(owned.values()), owned  # each one streams something
        time.sleep(3)
        assert all_streaming_once(exchange)

        # Phase 2: kill -9 one replica; its shards stream again on the others.
        victim, survivors = replicas[0], replicas[1:]
        victim_keys = {k for k in EXPECTED if k in held_by_shards(owned[victim.name])}
        killed_ms, killed = time.time_ns() // 1_000_000, time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        wait_for("the exchange to see the victim gone",
                 lambda: not victim_keys & set(held(exchange)), 10, survivors)
        wait_for("the victim's shards to stream elsewhere",
                 lambda: all_streaming_once(exchange), 60, survivors)
        handover = time.monotonic() - killed
        print(f"\nhand-over after kill -9: {handover:.1f} s for {len(owned[victim.name])} "
              f"shards ({len(victim_keys)} subscriptions)")
        assert handover < HANDOVER_LIMIT, f"took {handover:.1f} s"
        wait_for("2 replicas stable", lambda: stable(survivors), 30, survivors)

        # Phase 3: a fourth replica; shards move to it, the rest keep streaming.
        before = {r.name: r.shards() for r in survivors}
        gaps: Counter[str] = Counter()  # samples (0.1 s) a subscription was not streamed
        overlap: Counter[str] = Counter()
        newcomer = start_replica(tmp_path, "r3", config)
        group_now = [*survivors, newcomer]
        deadline = time.monotonic() + 90
        settled: tuple[list[set[int]], float] = ([], time.monotonic())
        while time.monotonic() < deadline:
            h = held(exchange)
            for k in EXPECTED:
                if h.get(k, 0) == 0:
                    gaps[k] += 1
                elif h[k] > 1:
                    overlap[k] += 1
            # Cooperative moves come in rounds: wait until nothing has changed for 3 s.
            if newcomer.shards() and all_streaming_once(exchange) and stable(group_now):
                view = [r.shards() for r in group_now]
                if view != settled[0]:
                    settled = (view, time.monotonic())
                elif time.monotonic() - settled[1] > 3:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the fourth replica did not take shards over")
        after = {r.name: r.shards() for r in survivors}
        moved = set().union(*before.values()) - set().union(*after.values())
        assert moved == newcomer.shards() and moved, (before, after)
        unmoved_keys = EXPECTED - held_by_shards(moved)
        assert not (set(gaps) & unmoved_keys), "a shard that did not move stopped"
        longest = max(gaps.values(), default=0) * 0.1
        print(f"rebalance to 4 replicas: {len(moved)} shards moved, longest gap of a moved "
              f"subscription {longest:.1f} s, overlaps {sum(overlap.values())}")
        assert longest < HANDOVER_LIMIT
        time.sleep(2)
        exchange.pause_feeds()  # what is sent from here on is not the replicas' to lose
        time.sleep(1)
    finally:
        for r in replicas + ([newcomer] if "newcomer" in locals() else []):
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in replicas + ([newcomer] if "newcomer" in locals() else []):
            try:
                r.proc.wait(60)
            except subprocess.TimeoutExpired:
                r.proc.kill()

    # Kafka: no trade twice; lost trades only from the kill's window, counted.
    topic = f"{prefix}.v1.trade"
    decoder = AvroDecoder()
    written = Counter(decoder.decode("v1_trade", m)["trade_id"]
                      for m in read_all(bootstrap, [topic], timeout=60)[topic])
    twice = {t: n for t, n in written.items() if n > 1}
    assert not twice, f"{len(twice)} trades written more than once"
    sent = {item["v"]: item["t"] for frame in exchange.sent_frames("v1")
            if frame.get("topic") == "trade" for item in frame["data"]}
    lost = {t: ts for t, ts in sent.items() if t not in written}
    print(f"trades: {len(sent)} sent by the exchange, {len(written)} in Kafka, "
          f"{len(lost)} lost")
    window = (killed_ms - 5_000, killed_ms + int(HANDOVER_LIMIT * 1000))
    outside = [t for t, ts in lost.items() if not window[0] <= ts <= window[1]]
    assert not outside, (f"{len(outside)} trades lost outside the hand-over window",
                         sorted((ts - killed_ms) / 1000 for ts in lost.values()))


def held_by_shards(owned: set[int]) -> set[str]:
    """The exchange keys of the subscriptions in ``owned`` shards."""
    from connector.scaleout.shards import shard_of

    return {k for k in EXPECTED
            if shard_of("v1", k.split()[1], k.split()[2], SHARDS) in owned}


def test_coordination_topic_is_created_and_checked(kafka_broker: KafkaBroker) -> None:
    from connector.config.model import KafkaConfig
    from connector.errors import ConfigError
    from connector.scaleout.coordinator import ensure_coordination_topic

    kafka = KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers])
    topic = f"scale.coord.{uuid.uuid4().hex[:6]}"
    ensure_coordination_topic(kafka, topic, 5)  # created
    ensure_coordination_topic(kafka, topic, 5)  # found, same count
    with pytest.raises(ConfigError) as err:
        ensure_coordination_topic(kafka, topic, 6)
    assert err.value.path == "coordination.shards" and "has 5 partitions" in str(err.value)
    with pytest.raises(ConfigError) as err:
        ensure_coordination_topic(KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers],
                                              create_topics=False), topic + ".x", 5)
    assert err.value.path == "coordination.topic"


def test_one_replica_owns_every_shard_and_reports_it(kafka_broker: KafkaBroker,
                                                     exchange: ExchangeServer) -> None:
    """In-process: a lone replica streams everything; /readyz and metrics say so."""
    from prometheus_client import REGISTRY

    from connector.config.load import loads
    from connector.service import Connector

    config = loads(f"""
bybit: {{urls: {{v1: "{exchange.url}/spot/quote/ws/v1"}}}}
kafka:
  bootstrap_servers: ["{kafka_broker.bootstrap_servers}"]
  topic_template: "scale1.{{stream}}.{{topic}}"
  dead_letter_topic: scale1.dead-letter
metrics: {{enabled: false}}
coordination: {{group: scale1-{uuid.uuid4().hex[:6]}, shards: 4}}
subscriptions:
  - {{stream: v1, topic: trade, symbols: [{", ".join(SYMBOLS[:20])}]}}
""", env={})
    connector = Connector(config).start()
    try:
        deadline = time.monotonic() + 60
        while not connector.readiness()["ready"] and time.monotonic() < deadline:
            time.sleep(0.2)
        body = connector.readiness()
        assert body["ready"], body
        assert body["coordination"]["shards_owned"] == [0, 1, 2, 3]
        assert body["coordination"]["state"] == "stable"
        assert len(body["connections"]) == 4  # one per shard
        assert {c["name"] for c in body["connections"]} == {f"v1-0.s{i}" for i in range(4)}
        assert REGISTRY.get_sample_value("bybit_connector_shards_owned") == 4
        assert REGISTRY.get_sample_value("bybit_connector_rebalances_total") >= 1
        time.sleep(2)
        assert REGISTRY.get_sample_value("bybit_connector_shard_handover_seconds_count") >= 4
        assert len(held(exchange)) == 20
    finally:
        connector.stop()
    assert REGISTRY.get_sample_value("bybit_connector_shards_owned") == 0


def test_a_session_timeout_the_broker_refuses_is_named(kafka_broker: KafkaBroker) -> None:
    """Crash detection is configurable only within the broker's session-timeout
    bounds; below them the replica says so (logs, /readyz) instead of retrying
    silently."""
    from connector.config.model import CoordinationConfig, KafkaConfig
    from connector.scaleout import coordinator as coordination
    from connector.scaleout.runner import ShardRunner

    coord = CoordinationConfig(group=f"short-{uuid.uuid4().hex[:6]}", shards=2,
                               session_timeout_seconds=1.0, heartbeat_interval_seconds=0.3)
    runner = ShardRunner({}, lambda _s, _subs: [], lambda _t: 0, lambda _subs: None, [])
    coordinator = coordination.Coordinator(
        coord, KafkaConfig(bootstrap_servers=[kafka_broker.bootstrap_servers]), runner).start()
    try:
        deadline = time.monotonic() + 30
        while coordinator.last_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        body = coordinator.status()
        assert not body["ready"], body
        assert "coordination.session_timeout_seconds 1" in body.get("last_error", ""), body
        assert "group.min.session.timeout.ms" in body["last_error"]
    finally:
        coordinator.stop()
