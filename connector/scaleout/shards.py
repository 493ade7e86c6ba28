"""Shards: how the subscriptions are cut up so several replicas can share them.

Pure functions, no I/O. A subscription (stream, topic id, symbol) belongs to
shard ``blake2b("stream/topic_id/symbol") % shards`` (the first 8 bytes of the
8-byte BLAKE2b digest of the UTF-8 text, big-endian) — a stable hash, not
Python's salted ``hash()``, so every replica, of any version and on any
machine, computes the same plan from the same config. Not CRC-32: it is
linear, and symbol lists are structured (S000..S019, BTC3L/BTC3S): CRC-32
left half the shards of a power-of-two count empty for such lists.

A private stream is never cut: one authenticated connection carries every
private topic of the account, so all of a private stream's subscriptions are
one unit, placed on shard ``blake2b(stream) % shards``.

The shard is the unit that moves between replicas (one partition of the
coordination topic each, see ``connector.scaleout.coordinator``); each shard gets its
own connections, so moving one shard never touches another's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PRIVATE_STREAMS = frozenset({"private", "v5-private"})


def shard_of(stream: str, topic_id: str, symbol: str, shards: int) -> int:
    """The shard of one subscription; ``shards`` >= 1."""
    key = stream if stream in PRIVATE_STREAMS else f"{stream}/{topic_id}/{symbol}"
    return stable_hash(key) % shards


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same everywhere, every time."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def plan(subscriptions: Sequence[Any], shards: int) -> dict[int, list[Any]]:
    """Every shard's subscriptions: each config entry cut by symbol into the
    shards its symbols fall in (config order kept; empty shards are absent).

    ``subscriptions`` are ``SubscriptionConfig``-like frozen dataclasses with
    ``stream``, ``topic_id`` and ``symbols``; the pieces are copies with a
    subset of ``symbols``.
    """
    out: dict[int, list[Any]] = {}
    for sub in subscriptions:
        if sub.stream in PRIVATE_STREAMS or not sub.symbols:
            out.setdefault(shard_of(sub.stream, sub.topic_id, "", shards), []).append(sub)
            continue
        by_shard: dict[int, list[str]] = {}
        for symbol in sub.symbols:
            by_shard.setdefault(shard_of(sub.stream, sub.topic_id, symbol, shards),
                                []).append(symbol)
        for shard, symbols in by_shard.items():
            piece = sub if len(symbols) == len(sub.symbols) else dataclasses.replace(
                sub, symbols=symbols)
            out.setdefault(shard, []).append(piece)
    return out


def subscriptions_of(shard_plan: Mapping[int, Sequence[Any]], owned: Iterable[int]) -> list[Any]:
    """The subscriptions of a set of shards (shard order, then config order)."""
    return [sub for shard in sorted(set(owned)) for sub in shard_plan.get(shard, ())]


def keys_of(subscriptions: Iterable[Any]) -> list[tuple[str, str, str]]:
    """(stream, topic id, symbol) of every single subscription; symbol "" for private."""
    out = []
    for sub in subscriptions:
        if sub.stream in PRIVATE_STREAMS or not sub.symbols:
            out.append((sub.stream, sub.topic_id, ""))
        else:
            out += [(sub.stream, sub.topic_id, symbol) for symbol in sub.symbols]
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """What to do to go from the shards running to the shards owned."""

    start: frozenset[int]
    stop: frozenset[int]

    def __bool__(self) -> bool:
        return bool(self.start or self.stop)


def diff(running: Iterable[int], owned: Iterable[int]) -> Change:
    """Shards to start and to stop. A shard revoked and re-assigned before this
    is applied is in both sets, hence in neither list: its connections keep
    streaming."""
    running, owned = set(running), set(owned)
    return Change(start=frozenset(owned - running), stop=frozenset(running - owned))
