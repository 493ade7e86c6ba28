"""ShardRunner without Kafka: owned shards → running connections, hand-over order,
metrics and readiness. The group protocol itself is tested against a real broker
(tests/integration/test_scaleout.py)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import REGISTRY

from connector.config.model import SubscriptionConfig
from connector.ops import metrics
from connector.scaleout import shards
from connector.scaleout.runner import ShardRunner

SYMBOLS = [f"S{i:02d}USDT" for i in range(40)]
N = 4


class FakeConnection:
    """Stands in for a WebSocket connection; records what happened to it."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.last_error: str | None = None
        self.events = events
        self.started = self.stopped = False

    @property
    def is_up(self) -> bool:
        return self.started and not self.stopped

    @property
    def all_subscribed(self) -> bool:
        return self.is_up

    def start(self) -> FakeConnection:
        self.started = True
        self.events.append(f"start {self.name}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True
        self.events.append(f"stop {self.name}")

    def is_alive(self) -> bool:
        return self.is_up


def make_runner() -> tuple[ShardRunner, list[str], dict[int, list[FakeConnection]]]:
    subs = [SubscriptionConfig(stream="v1", topic="trade", symbols=list(SYMBOLS))]
    plan = shards.plan(subs, N)
    events: list[str] = []
    built: dict[int, list[FakeConnection]] = {}

    def build(shard: int, shard_subs: list[Any]) -> list[FakeConnection]:
        conns = [FakeConnection(f"v1-0.s{shard}", events)]
        built.setdefault(shard, []).extend(conns)
        return conns

    def seed(shard_subs: list[Any]) -> None:
        events.append("seed " + ",".join(sorted(s for x in shard_subs for s in x.symbols)))

    def flush(timeout: float) -> int:
        events.append("flush")
        return 0

    def hold(shard_subs: list[Any]) -> None:
        events.append("hold")

    def release(shard_subs: list[Any]) -> None:
        events.append("release")

    runner = ShardRunner(plan, build, flush, seed, shards.keys_of(subs), hold, release)
    return runner, events, built


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_assign_holds_starts_then_seeds_and_revoke_stops_then_flushes() -> None:
    runner, events, _built = make_runner()
    runner.assign({0, 1})
    runner.apply()
    # Seeding never delays subscribing: the connections start first, their
    # de-duplicated records held until the seed knows the overlap.
    assert events[:3] == ["hold", "start v1-0.s0", "start v1-0.s1"]
    assert runner.settle(5)
    assert events[3].startswith("seed ") and events[4:] == ["release"]
    assert gauge("bybit_connector_shards_owned") == 2
    assert runner.status()["0"]["streaming"] and runner.status()["1"]["streaming"]
    events.clear()
    runner.revoke({0})
    # Held records written, stopped, flushed before the group moves on.
    assert events == ["release", "stop v1-0.s0", "flush"]
    assert gauge("bybit_connector_shards_owned") == 1
    assert [c.name for c in runner.connections()] == ["v1-0.s1"]


def test_unmoved_shards_keep_their_connections() -> None:
    runner, _events, built = make_runner()
    runner.assign({0, 1, 2})
    runner.apply()
    kept = built[1][0]
    runner.revoke({0})
    runner.assign({3})
    runner.apply()
    assert kept.started and not kept.stopped and len(built[1]) == 1
    # Revoked and re-assigned before the next apply: never restarted.
    runner.revoke({2})
    assert built[2][0].stopped  # a real revoke stops at once (no overlap with the next owner)
    runner.assign({1})
    runner.apply()
    assert len(built[1]) == 1


def test_metrics_follow_the_owned_shards() -> None:
    runner, _, _ = make_runner()
    plan = shards.plan([SubscriptionConfig(stream="v1", topic="trade", symbols=SYMBOLS)], N)
    runner.assign({2})
    runner.apply()
    owned = {s for sub in plan[2] for s in sub.symbols}
    assert gauge("bybit_connector_subscriptions_configured", stream="v1", topic="trade") == len(
        owned)
    # Other tests in the process may have registered v1 trade symbols of their own.
    ages = {k[2] for k in metrics.last_message_age._last
            if k[:2] == ("v1", "trade") and k[2] in SYMBOLS}
    assert ages == owned
    runner.stop_all()
    assert gauge("bybit_connector_subscriptions_configured", stream="v1", topic="trade") == 0
    assert not any(k[:2] == ("v1", "trade") and k[2] in SYMBOLS
                   for k in metrics.last_message_age._last)
    assert gauge("bybit_connector_shards_owned") == 0


def test_the_gap_since_the_previous_writer_is_reported_per_shard() -> None:
    """Without a standby, a crash loses what Bybit sent between the dead owner's
    last record and the new owner's first data: counted per shard, in seconds."""
    subs = [SubscriptionConfig(stream="v1", topic="trade", symbols=list(SYMBOLS))]
    plan = shards.plan(subs, N)
    now_ms = int(time.time() * 1000)
    newest = {s: now_ms - 7000 for s in SYMBOLS}  # the previous owner wrote 7 s ago
    newest[plan[1][0].symbols[0]] = now_ms - 4000  # its last record in shard 1: 4 s ago

    runner = ShardRunner(plan, lambda shard, _subs: [FakeConnection(f"v1-0.s{shard}", [])],
                         lambda _t: 0, lambda _subs: newest, shards.keys_of(subs))
    before = {s: gauge("bybit_connector_shard_gap_seconds_total", shard=s) or 0.0
              for s in ("0", "1")}
    runner.assign({0, 1})
    runner.apply()
    assert runner.settle(5)
    assert gauge("bybit_connector_shard_gap_seconds_total", shard="1") in (None, before["1"])
    for shard in (0, 1):  # first data arrives
        sym = plan[shard][0].symbols[0]
        metrics.last_message_age.touch("v1", "trade", sym)
    runner.observe_handovers()
    gap0 = gauge("bybit_connector_shard_gap_seconds_total", shard="0") - before["0"]
    gap1 = gauge("bybit_connector_shard_gap_seconds_total", shard="1") - before["1"]
    assert 7.0 <= gap0 < 9.0 and 4.0 <= gap1 < 6.0, (gap0, gap1)
    runner.observe_handovers()  # reported once
    assert gauge("bybit_connector_shard_gap_seconds_total", shard="0") - before["0"] == gap0
    runner.stop_all()


def test_a_revoked_shard_streams_on_until_the_overlap_ends() -> None:
    """Make-before-break: the old owner lets go only after the overlap, so the
    next owner (assigned meanwhile) is subscribed before the last record here;
    a shard given back during the overlap is never stopped."""
    subs = [SubscriptionConfig(stream="v1", topic="trade", symbols=list(SYMBOLS))]
    events: list[str] = []
    built: dict[int, list[FakeConnection]] = {}

    def build(shard: int, _subs: list[Any]) -> list[FakeConnection]:
        built.setdefault(shard, []).append(FakeConnection(f"v1-0.s{shard}", events))
        return built[shard][-1:]

    overlap = 0.5
    runner = ShardRunner(shards.plan(subs, N), build, lambda _t: events.append("flush") or 0,
                         lambda _subs: None, shards.keys_of(subs), overlap=overlap)
    runner.assign({0, 1, 2})
    runner.apply()
    revoked_at = time.monotonic()
    runner.revoke({0, 1})  # returns at once: the group moves on
    assert time.monotonic() - revoked_at < overlap / 2
    assert not built[0][0].stopped and not built[1][0].stopped
    runner.assign({1})  # given back during the overlap
    runner.apply()
    assert len(built[1]) == 1  # kept, not restarted
    deadline = time.monotonic() + 10 * overlap
    while not built[0][0].stopped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert built[0][0].stopped and time.monotonic() - revoked_at >= overlap
    assert events[-2:] == ["stop v1-0.s0", "flush"]
    assert not built[1][0].stopped and not built[2][0].stopped
    runner.revoke({2})
    stopping = time.monotonic()
    runner.stop_all()  # waits for shard 2's overlap, then stops everything
    assert time.monotonic() - stopping >= overlap * 0.9
    assert built[1][0].stopped and built[2][0].stopped
