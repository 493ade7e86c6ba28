"""Bybit's connection-rate limit as a small pure piece: at most ``limit`` new
connections per ``window`` seconds per WebSocket host (Bybit v5: 500 per
5 minutes per domain), shared by every connection of the process.

The reconnect loop asks ``reserve(host)`` before each connect: 0 means "go"
(the attempt is counted), a positive number is how long to wait before asking
again. Thread-safe; time comes from ``clock`` so tests need no sleeping.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

LIMIT = 500
WINDOW_SECONDS = 300.0


class ConnectBudget:
    """A sliding-window counter of connection attempts per host."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit, self.window, self._clock = limit, window, clock
        self._lock = threading.Lock()
        self._attempts: dict[str, collections.deque[float]] = {}

    def reserve(self, host: str) -> float:
        """Count one connection attempt to ``host`` if the window has room and
        return 0.0; else count nothing and return the seconds until it has."""
        now = self._clock()
        with self._lock:
            attempts = self._attempts.setdefault(host, collections.deque())
            while attempts and attempts[0] <= now - self.window:
                attempts.popleft()
            if len(attempts) < self.limit:
                attempts.append(now)
                return 0.0
            return attempts[0] + self.window - now

    def used(self, host: str) -> int:
        """Attempts counted in the current window (for tests and logs)."""
        now = self._clock()
        with self._lock:
            return sum(1 for t in self._attempts.get(host, ()) if t > now - self.window)


SHARED = ConnectBudget()  # every connection of the process draws from this one
