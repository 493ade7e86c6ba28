"""Reconnect policy as two small pure pieces: a backoff generator and the
retry-versus-slow decision."""

from __future__ import annotations

import random
from collections.abc import Iterator

import websocket


def backoff(initial: float = 0.5, cap: float = 30.0, factor: float = 2.0,
            rng: random.Random | None = None, immediate_first: bool = True) -> Iterator[float]:
    """Delays in seconds: 0 first (Bybit asks to reconnect immediately), then
    geometric growth from ``initial`` with "equal jitter" (half fixed, half
    random, so retries of many clients spread out), capped at ``cap``.
    Start a new generator to reset it (after a good subscribe)."""
    rng = rng or random.Random()
    if immediate_first:
        yield 0.0
    delay = initial
    while True:
        base = min(cap, delay)
        yield base / 2 + rng.uniform(0, base / 2)
        delay *= factor


def is_retryable(exc: BaseException) -> bool:
    """True for failures worth retrying at the normal pace (network trouble,
    server closes, 5xx/429 handshakes); False for ones a quick retry will not
    fix (bad URL, 4xx handshakes), which retry at the slow pace."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        code = getattr(exc, "status_code", 0) or 0
        return code >= 500 or code == 429
    if isinstance(exc, ValueError):  # malformed URL and the like
        return False
    return True
