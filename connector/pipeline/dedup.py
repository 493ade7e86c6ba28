"""Bounded memory of recently written ids, to suppress replays.

Bybit's v1 ``trade`` topic replays the last 60 trades on every (re)subscribe,
so after a reconnect the connector would otherwise write them twice. Trade
ids are platform-unique, so remembering the last ``capacity`` ids per
(stream, symbol) is enough; memory stays bounded at ``capacity`` ids each.
"""

from __future__ import annotations

import collections


class RecentIds:
    """A set of the ``capacity`` most recently added ids (FIFO eviction).

    Not thread-safe; each instance belongs to one (stream, symbol), which
    only one connection thread feeds.
    """

    __slots__ = ("_capacity", "_order", "_seen")

    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._order: collections.deque[str] = collections.deque()
        self._seen: set[str] = set()

    def add(self, item: str) -> bool:
        """Remember ``item``; return False if it was already there (a duplicate)."""
        if item in self._seen:
            return False
        self._seen.add(item)
        self._order.append(item)
        if len(self._order) > self._capacity:
            self._seen.discard(self._order.popleft())
        return True

    def __len__(self) -> int:
        return len(self._order)
