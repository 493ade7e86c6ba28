"""Shards: a stable hash, an even spread, private streams whole, assignment diffs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter

import pytest

from connector.config.load import loads
from connector.config.model import Config
from connector.errors import ConfigError
from connector.scaleout import shards

SYMBOLS = [f"S{i:03d}USDT" for i in range(300)]
PINNED = [10, 9]  # BTCUSDT, ETHUSDT of v1 trade over 12 shards


def config(subscriptions: str, coordination: str = "") -> Config:
    return loads(f"""
bybit: {{credentials: {{api_key: k, api_secret: s}}}}
{coordination}
subscriptions:
{subscriptions}
""", env={})


def blake(text: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def test_shard_of_is_a_blake2b_of_the_subscription_text() -> None:
    assert shards.shard_of("v1", "trade", "BTCUSDT", 12) == blake(b"v1/trade/BTCUSDT") % 12
    assert shards.shard_of("v1", "trade", "BTCUSDT", 1) == 0
    # Pinned: a change of hash would move every shard during a rolling upgrade.
    assert [shards.shard_of("v1", "trade", s, 12) for s in ("BTCUSDT", "ETHUSDT")] == PINNED


def test_shard_of_is_the_same_in_another_interpreter() -> None:
    """Python's hash() of a str changes with PYTHONHASHSEED; the shard must not."""
    code = ("from connector.scaleout.shards import shard_of;"
            "print([shard_of('v1', 'trade', s, 97) for s in ('BTCUSDT', 'ETHUSDT', 'X1')])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed}, check=True).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1
    assert outs.pop().strip() == str([shards.shard_of("v1", "trade", s, 97)
                                      for s in ("BTCUSDT", "ETHUSDT", "X1")])


@pytest.mark.parametrize("n", [3, 4, 8, 12, 16, 24])
def test_subscriptions_spread_evenly(n: int) -> None:
    counts = Counter(shards.shard_of("v1", topic, s, n)
                     for s in SYMBOLS for topic in ("trade", "realtimes"))
    mean = 600 / n
    assert set(counts) == set(range(n))
    # Binomial spread: within 4 standard deviations of the mean.
    sd = (600 * (1 / n) * (1 - 1 / n)) ** 0.5
    assert max(counts.values()) < mean + 4 * sd and min(counts.values()) > mean - 4 * sd


@pytest.mark.parametrize(("n", "count"), [(2, 20), (4, 20), (4, 40), (8, 40)])
def test_similar_names_reach_every_shard(n: int, count: int) -> None:
    """Symbol lists are structured (S000..S039, BTC3LUSDT/BTC3SUSDT): a linear hash
    such as CRC-32 keeps their shared bits and leaves shards empty at 2^k shards."""
    counts = Counter(shards.shard_of("v1", "trade", s, n) for s in SYMBOLS[:count])
    assert set(counts) == set(range(n)), counts
    assert max(counts.values()) <= 2.5 * count / n, counts


def test_topics_of_one_symbol_are_spread_too() -> None:
    """The key is (stream, topic, symbol): one busy symbol does not pin a shard."""
    topics = ["trade", "realtimes", "depth", "diffDepth", "kline_1m", "kline_5m", "lt"]
    assert len({shards.shard_of("v1", t, "BTCUSDT", 12) for t in topics}) > 1


def test_private_stream_is_one_shard_of_its_own() -> None:
    cfg = config("""
  - {stream: private, topic: executionReport}
  - {stream: private, topic: outboundAccountInfo}
  - {stream: private, topic: ticketInfo}
  - {stream: v1, topic: trade, symbols: [BTCUSDT]}
""")
    plan = shards.plan(cfg.subscriptions, 12)
    private = [s for s, subs in plan.items() if any(x.stream == "private" for x in subs)]
    assert private == [blake(b"private") % 12]
    assert [x.topic for x in plan[private[0]] if x.stream == "private"] == [
        "executionReport", "outboundAccountInfo", "ticketInfo"]
    assert shards.shard_of("v5-private", "order.spot", "", 7) == blake(b"v5-private") % 7


def test_plan_cuts_symbol_lists_and_loses_nothing() -> None:
    cfg = config(f"""
  - {{stream: v1, topic: trade, symbols: [{", ".join(SYMBOLS)}]}}
  - {{stream: v1, topic: kline, interval: 1m, symbols: [BTCUSDT, ETHUSDT]}}
""")
    subs = cfg.subscriptions
    plan = shards.plan(subs, 12)
    everything = shards.keys_of(shards.subscriptions_of(plan, range(12)))
    assert sorted(everything) == sorted(shards.keys_of(subs))
    assert len(everything) == len(set(everything)) == 302
    for shard, pieces in plan.items():
        for piece in pieces:
            assert all(shards.shard_of(piece.stream, piece.topic_id, s, 12) == shard
                       for s in piece.symbols)
            assert piece.interval == ("1m" if piece.topic == "kline" else None)
    assert shards.subscriptions_of(plan, []) == []


def test_diff_starts_new_shards_stops_lost_ones_and_keeps_the_rest() -> None:
    change = shards.diff({1, 2, 3}, {2, 3, 4})
    assert change.start == {4} and change.stop == {1}
    assert not shards.diff({1, 2}, [2, 1])
    # Revoked and re-assigned in one rebalance: running and owned both hold it.
    assert 3 not in shards.diff({3}, {3}).stop


def test_coordination_config_defaults_and_validation() -> None:
    subs = "  - {stream: v1, topic: trade, symbols: [BTCUSDT]}"
    assert config(subs).coordination is None
    c = config(subs, "coordination: {group: bybit-prod}").coordination
    assert (c.shards, c.coordination_topic) == (12, "bybit.connector.coordination.bybit-prod")
    for bad, path in [("{group: 'a b'}", "coordination.group"),
                      ("{group: g, shards: 0}", "coordination.shards"),
                      ("{group: g, shards: 1001}", "coordination.shards"),
                      ("{shards: 3}", "coordination.group"),
                      ("{group: g, topic: 'a/b'}", "coordination.topic"),
                      ("{group: g, heartbeat_interval_seconds: 3}",
                       "coordination.heartbeat_interval_seconds")]:
        with pytest.raises(ConfigError) as err:
            config(subs, f"coordination: {bad}")
        assert err.value.path == path, bad
