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

The chain also breaks when a frame that passed ``check`` is then not
written (``break_chain``): ``dead_letter`` (it did not map or serialize, or
could not even be decoded), ``dropped`` (the pending-records bound refused
it) or ``delivery_failed`` (Kafka refused it after later records were sent).
A book frame must carry both sides (``b`` and ``a``; Bybit documents both on
every frame, an empty side as ``[]``): ``missing_side`` names the one
absent, because "absent" cannot be told apart from "lost on the way", and
guessing "unchanged" could leave a wrong book without a marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from connector.bybit.events import Stamp, V5Data

Verdict = Literal["ok", "stale", "gap", "out_of_order", "before_snapshot"]
RESYNC: frozenset[str] = frozenset({"gap", "out_of_order"})
# Why a written book frame was not followed by its successor: ``break_chain`` reasons.
LOST_REASONS = ("dead_letter", "dropped", "delivery_failed")
# The book topic named by a frame too broken to decode (a prefix is enough).
_TOPIC = re.compile(rb'"topic"\s*:\s*"(orderbook\.[0-9a-z]+)\.([0-9A-Za-z_-]{1,40})"')


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

    def continue_at(self, topic_id: str, symbol: str, u: int) -> None:
        """The book's chain in Kafka ends at ``u`` (written by a replica that is
        gone): the next delta written must be ``u + 1`` (a standby's take-over)."""
        book = self._books.setdefault((topic_id, symbol), _Book())
        book.last_u, book.last_seq, book.reason = u, None, None

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

    def knows(self, topic_id: str, symbol: str) -> bool:
        """Whether this book was subscribed or written (not a name a frame made up)."""
        return (topic_id, symbol) in self._books

    def position(self, topic_id: str, symbol: str) -> tuple[int | None, int | None]:
        """(last ``u``, last ``seq``) written; (None, None) while waiting for a snapshot."""
        book = self._books.get((topic_id, symbol))
        return (None, None) if book is None else (book.last_u, book.last_seq)

    def last_u(self, topic_id: str, symbol: str) -> int | None:
        book = self._books.get((topic_id, symbol))
        return None if book is None else book.last_u

    def break_chain(self, topic_id: str, symbol: str, reason: str) -> bool:
        """A frame of this book was not written (``LOST_REASONS``): wait for a
        snapshot, which carries ``reason``. Returns whether the chain was live
        (the caller writes a marker and resubscribes); False when the book was
        already waiting for a snapshot (a resubscribe is already under way)."""
        book = self._books.setdefault((topic_id, symbol), _Book())
        live = book.last_u is not None
        book.last_u = book.last_seq = None
        if live or book.reason is None:
            book.reason = reason
        return live

    @staticmethod
    def _resync(book: _Book, reason: Verdict) -> Verdict:
        book.last_u = book.last_seq = None
        book.reason = reason
        return reason


def missing_side(item: dict[str, Any]) -> str | None:
    """The side key (``b`` or ``a``) a book frame lacks or holds as no list, else None."""
    # Exact types, as json.loads makes them: this runs for every book frame.
    if type(item.get("b")) is not list:
        return "b"
    if type(item.get("a")) is not list:
        return "a"
    return None


def book_in_raw(raw: bytes) -> tuple[str, str] | None:
    """(topic_id, symbol) of the v5 book a frame names in its first bytes, for
    frames that could not be decoded (truncated, invalid JSON, too large)."""
    found = _TOPIC.search(raw[:4096])
    if found is None:
        return None
    return found.group(1).decode(), found.group(2).decode()


class BookRef(NamedTuple):
    """Which book record a sent record is, should Kafka refuse it later (a
    NamedTuple: one is made per book record, and it is cheaper than a frozen
    dataclass).

    On a marker, ``marker`` is its reason and the ids are those it names."""

    stream: str
    topic_id: str
    symbol: str
    update_id: int
    cross_seq: int | None
    marker: str | None = None


def marker_frame(stream: str, topic_id: str, symbol: str, u: int | None, seq: int | None,
                  ts: int | None, stamp: Stamp) -> V5Data:
    """A well-formed empty book frame naming what the marker is about, so the
    marker is mapped like any book record whatever the frame that failed held."""
    item = {"s": symbol, "b": [], "a": [], "u": u or 0, "seq": seq or 0}
    return V5Data(stream=stream, topic=f"{topic_id}.{symbol}",  # type: ignore[arg-type]
                  topic_id=topic_id, symbol=symbol, type="delta",
                  ts=ts if ts is not None else stamp.wall_ms, cts=None, cs=None, msg_id=None,
                  creation_time=None, items=(item,), stamp=stamp, raw=b"")
