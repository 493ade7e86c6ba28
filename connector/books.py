"""Order-book continuity for Bybit v5 books, pure (no sockets, no Kafka).

Per (topic_id, symbol), e.g. ("orderbook.50", "BTCUSDT"), it tracks the last
update id ``u`` and cross sequence ``seq`` written, and judges each frame:

* ``snapshot`` → ``ok``: the book is reset and ``last_u = u``. This covers
  ``u == 1`` (Bybit restarted its book service; ``u`` goes backwards) and the
  snapshots Bybit re-sends on its own.
* ``delta`` with ``u == last_u + 1`` → ``ok``.
* ``delta`` with ``u <= last_u`` → ``stale`` (a duplicate or an old frame): drop it.
* ``delta`` with ``u > last_u + 1`` → ``gap``: updates were lost; resync.
* ``delta`` whose ``seq`` is lower than the last written ``seq`` → ``out_of_order``
  (Bybit's full-depth rule: seq is monotonic with holes, so only a decrease
  is an error): resync.
* ``delta`` before any snapshot (after a (re)subscribe or a reconnect, or
  while a resync is pending) → ``before_snapshot``: drop it until the snapshot.

Depth 1 is snapshot-only: every frame is a full book, so it is always
``ok``; a repeated ``u`` is Bybit's 3 s keep-alive resend of an unchanged
book (written: it is a complete, valid snapshot), skipped ``u`` values are
harmless. ``orderbook.rpi`` follows the same rules as depths 50-1000.

After ``gap``/``out_of_order`` the book waits for a snapshot (the caller
resubscribes the topic) and remembers the reason, which ``take_reason``
hands to the record of that next snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verdict = Literal["ok", "stale", "gap", "out_of_order", "before_snapshot"]
RESYNC: frozenset[str] = frozenset({"gap", "out_of_order"})


@dataclass(slots=True)
class _Book:
    last_u: int | None = None  # None: waiting for a snapshot
    last_seq: int | None = None
    reason: str | None = None  # why the next snapshot is a resync


def snapshot_only(topic_id: str) -> bool:
    """Depth 1 sends snapshots only (since 2025-03)."""
    return topic_id == "orderbook.1"


class BookTracker:
    """Continuity state of every v5 book one pipeline writes. Not thread-safe:
    each book is fed by one connection thread."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, str], _Book] = {}

    def expect_snapshot(self, topic_id: str, symbol: str) -> None:
        """A (re)subscribe was sent: deltas are dropped until its snapshot."""
        book = self._books.setdefault((topic_id, symbol), _Book())
        book.last_u = None
        book.last_seq = None

    def check(self, topic_id: str, symbol: str, is_snapshot: bool, u: int,
              seq: int | None = None) -> Verdict:
        """Judge one frame and, if ``ok``, advance the state (see module doc)."""
        book = self._books.setdefault((topic_id, symbol), _Book())
        if is_snapshot or snapshot_only(topic_id):
            book.last_u, book.last_seq = u, seq
            return "ok"
        if book.last_u is None:
            return "before_snapshot"
        if seq is not None and book.last_seq is not None and seq < book.last_seq:
            return self._resync(book, "out_of_order")
        if u <= book.last_u:
            return "stale"
        if u > book.last_u + 1:
            return self._resync(book, "gap")
        book.last_u, book.last_seq = u, seq if seq is not None else book.last_seq
        return "ok"

    def take_reason(self, topic_id: str, symbol: str) -> str | None:
        """The pending resync reason for the snapshot being written now (once)."""
        book = self._books.get((topic_id, symbol))
        if book is None or book.reason is None:
            return None
        reason, book.reason = book.reason, None
        return reason

    def last_u(self, topic_id: str, symbol: str) -> int | None:
        book = self._books.get((topic_id, symbol))
        return None if book is None else book.last_u

    @staticmethod
    def _resync(book: _Book, reason: Verdict) -> Verdict:
        book.last_u = book.last_seq = None
        book.reason = reason
        return reason
