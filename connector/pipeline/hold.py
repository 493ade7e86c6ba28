"""Records that wait for their de-duplication seed, so seeding never delays subscribing.

A replica given a shard subscribes at once; Bybit v5 sends no history on
subscribe, so every second spent before subscribing is a second of trades
lost. But the first records may overlap what the previous owner already wrote
(its last frames, or the v1 replay), and only the Kafka tail says which. So a
new shard's de-duplicated symbols are *held*: their records are buffered, in
arrival order, while the tail is read in parallel; ``release`` then writes the
buffer through the seeded de-duplication (the overlap dropped by identity) and
later records flow straight through.

Thread-safety: ``defer`` runs on connection threads, ``hold``/``release`` on
the shard-starter thread. A symbol leaves the hold only after its buffer has
been written, under the lock, so a record arriving during the release waits
for it and keeps its order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

Write = Callable[[], object]
# Held in place of symbols: every record of the route (a private stream's events
# are not cut by symbol; its shard moves whole).
EVERY = "*"


class Holds:
    """Symbols of one route whose records wait for the seed (see module doc).

    One buffer per route, in arrival order across its symbols, so a release of
    several symbols writes them in the order they came (one partition keeps
    the order Bybit sent)."""

    __slots__ = ("_held", "_lock", "_pending")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._pending: list[tuple[str, Write]] = []

    def __bool__(self) -> bool:  # the per-record fast path: nothing held, nothing to check
        return bool(self._held)

    def hold(self, symbols: Iterable[str]) -> None:
        """Buffer ``symbols``' records from now until ``release``."""
        with self._lock:
            self._held.update(symbols)

    def defer(self, symbol: str, write: Write) -> bool:
        """Buffer ``write`` if ``symbol`` is held (True); False: write it now."""
        if symbol not in self._held and EVERY not in self._held:
            return False
        with self._lock:
            if symbol not in self._held and EVERY not in self._held:
                return False  # released meanwhile: its buffer is written already
            self._pending.append((symbol, write))
            return True

    def release(self, symbols: Iterable[str]) -> int:
        """Write ``symbols``' buffered records in arrival order, then stop holding
        them (``EVERY``: all). Returns the records released."""
        wanted = set(symbols)
        every = EVERY in wanted
        with self._lock:
            keep: list[tuple[str, Write]] = []
            released = 0
            for symbol, write in self._pending:
                if every or symbol in wanted:
                    write()
                    released += 1
                else:
                    keep.append((symbol, write))
            self._pending = keep
            self._held -= wanted
        return released

    def held(self) -> int:
        """Buffered writes, all symbols."""
        with self._lock:
            return len(self._pending)
