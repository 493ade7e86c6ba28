"""Order books for the local exchange's v5 stream: generation and ground truth.

One ``Book`` per ``orderbook.{depth}.{symbol}`` (or ``orderbook.rpi.{symbol}``)
topic, shared by every client, as on Bybit where two clients see the same
``u`` for the same update. Pure code (no sockets, no clock), so its invariants
can be checked over hundreds of thousands of updates in a unit test.

Invariants after every update of a depth-N book: exactly N levels a side,
every price on the tick grid, best bid < best ask (never crossed). Levels are
inserted and removed around a mid that moves, so the book neither drains nor
collapses over hours. Prices are integer ticks internally (no float drift).

``History`` keeps the last ``keep`` states of a topic compactly (the changes of
each update plus a full checkpoint every ``every`` updates) so tests can ask
for the book at any recent ``u``.
"""

from __future__ import annotations

import bisect
import collections
import random
from dataclasses import dataclass

# A level's size: one decimal string, or (non-RPI size, RPI size) for orderbook.rpi.
Size = str | tuple[str, str]
Changes = tuple[list[tuple[int, Size]], list[tuple[int, Size]]]  # (bids, asks); "0" deletes
DELETED: str = "0"
RPI_DELETED: tuple[str, str] = ("0", "0")


def price_text(ticks: int, places: int = 2) -> str:
    """Ticks to Bybit's decimal string (fixed places, like ``"121958.40"``)."""
    if places == 0:
        return str(ticks)
    sign = "-" if ticks < 0 else ""
    whole, frac = divmod(abs(ticks), 10 ** places)
    return f"{sign}{whole}.{frac:0{places}d}"


def level(ticks: int, size: Size, places: int = 2) -> list[str]:
    """One wire level: ``[price, size]`` or ``[price, nonRpiSize, rpiSize]``."""
    if isinstance(size, tuple):
        return [price_text(ticks, places), size[0], size[1]]
    return [price_text(ticks, places), size]


@dataclass(frozen=True, slots=True)
class Update:
    """What one ``step`` changed (``changed`` False: nothing, for level 1)."""

    changed: bool
    bids: list[tuple[int, Size]]
    asks: list[tuple[int, Size]]


class Book:
    """A depth-limited book that stays full, sorted and uncrossed.

    ``bp``/``ap`` are ascending price lists (ticks); best bid is ``bp[-1]``,
    best ask ``ap[0]``. ``u`` is the topic's update id (+1 per update).
    """

    def __init__(self, depth: int, mid: int, rng: random.Random, u: int = 1,
                 rpi: bool = False, change_prob: float = 1.0) -> None:
        self.depth, self.rng, self.u, self.rpi = depth, rng, u, rpi
        self.change_prob = change_prob  # level 1: chance that a step changes the book
        self.bp: list[int] = []
        self.ap: list[int] = []
        self.bids: dict[int, Size] = {}
        self.asks: dict[int, Size] = {}
        self.reset(mid, u)

    # -- state ---------------------------------------------------------------------

    def reset(self, mid: int, u: int) -> None:
        """A fresh full book around ``mid`` (ticks) with update id ``u``."""
        self.u = u
        self.bids, self.asks = {}, {}
        price = mid - self.rng.randrange(1, 3)
        for _ in range(self.depth):
            self.bids[price] = self._size()
            price -= self.rng.randrange(1, 4)
        price = mid + self.rng.randrange(1, 3)
        for _ in range(self.depth):
            self.asks[price] = self._size()
            price += self.rng.randrange(1, 4)
        self.bp, self.ap = sorted(self.bids), sorted(self.asks)

    def levels(self) -> tuple[list[tuple[int, Size]], list[tuple[int, Size]]]:
        """Bids best first (descending), asks best first (ascending)."""
        return ([(p, self.bids[p]) for p in reversed(self.bp)],
                [(p, self.asks[p]) for p in self.ap])

    def mid(self) -> int:
        return (self.bp[-1] + self.ap[0]) // 2

    # -- generation ----------------------------------------------------------------

    def _size(self) -> Size:
        rng = self.rng
        size = f"{rng.uniform(0.000001, 2.5):.6f}"
        if not self.rpi:
            return size
        roll = rng.random()
        rpi = f"{rng.uniform(0.000001, 1.0):.6f}"
        if roll < 0.15:
            return ("0", rpi)  # only RPI liquidity at this price
        return (size, rpi if roll < 0.4 else "0")

    def step(self) -> Update:
        """Apply one random update; ``u`` grows by one when anything changed."""
        rng = self.rng
        if rng.random() >= self.change_prob:
            return Update(False, [], [])
        cb: dict[int, Size] = {}
        ca: dict[int, Size] = {}
        if self.depth == 1:
            self._step_top(cb, ca)
        else:
            for _ in range(rng.randrange(1, 4)):
                self._resize(rng.random() < 0.5, cb, ca)
            roll = rng.random()
            span = (self.bp[-1] - self.bp[0]) + (self.ap[-1] - self.ap[0])
            tight = span < 2.4 * self.depth
            loose = span > 6 * self.depth
            if (roll < 0.25 and not tight) or loose:
                self._insert_inside(rng.random() < 0.5, cb, ca)
            elif roll < 0.5 or tight:
                self._delete_inside(rng.random() < 0.5, cb, ca)
            elif roll < 0.6:
                self._move(rng.random() < 0.5, cb, ca)
        self.u += 1
        return Update(True, sorted(cb.items(), reverse=True), sorted(ca.items()))

    def _set(self, bid: bool, price: int, size: Size, cb: dict[int, Size],
             ca: dict[int, Size]) -> None:
        side, prices, changes = (self.bids, self.bp, cb) if bid else (self.asks, self.ap, ca)
        deleted = size in (DELETED, RPI_DELETED)
        if deleted:
            if price in side:
                del side[price]
                prices.pop(bisect.bisect_left(prices, price))
        else:
            if price not in side:
                bisect.insort(prices, price)
            side[price] = size
        changes[price] = size

    def _delete_marker(self) -> Size:
        return RPI_DELETED if self.rpi else DELETED

    def _resize(self, bid: bool, cb: dict[int, Size], ca: dict[int, Size]) -> None:
        prices = self.bp if bid else self.ap
        i = int(len(prices) * self.rng.random() ** 2)  # near the top more often
        price = prices[-1 - i] if bid else prices[i]
        self._set(bid, price, self._size(), cb, ca)

    def _insert_inside(self, bid: bool, cb: dict[int, Size], ca: dict[int, Size]) -> None:
        """A new level between two existing ones; the worst level leaves the window."""
        prices = self.bp if bid else self.ap
        for _ in range(4):
            i = self.rng.randrange(len(prices) - 1)
            lo, hi = prices[i], prices[i + 1]
            if hi - lo > 1:
                self._set(bid, self.rng.randrange(lo + 1, hi), self._size(), cb, ca)
                worst = prices[0] if bid else prices[-1]
                self._set(bid, worst, self._delete_marker(), cb, ca)
                return

    def _delete_inside(self, bid: bool, cb: dict[int, Size], ca: dict[int, Size]) -> None:
        """A level (not the best) goes; a new one enters at the far end of the window."""
        prices = self.bp if bid else self.ap
        i = self.rng.randrange(len(prices) - 1)
        price = prices[i] if bid else prices[-1 - i]  # never the best
        self._set(bid, price, self._delete_marker(), cb, ca)
        step = self.rng.randrange(1, 4)
        far = prices[0] - step if bid else prices[-1] + step
        self._set(bid, far, self._size(), cb, ca)

    def _move(self, up: bool, cb: dict[int, Size], ca: dict[int, Size]) -> None:
        """The mid moves one level: the best on one side is taken, the other side
        gains a new best inside the widened spread; each side stays at N levels."""
        taken_bid = not up
        prices = self.bp if taken_bid else self.ap
        best = prices[-1] if taken_bid else prices[0]
        self._set(taken_bid, best, self._delete_marker(), cb, ca)
        step = self.rng.randrange(1, 4)
        far = prices[0] - step if taken_bid else prices[-1] + step
        self._set(taken_bid, far, self._size(), cb, ca)
        # the other side: a new best strictly inside the spread, its worst level leaves
        bb, ba = self.bp[-1], self.ap[0]
        if ba - bb > 1:
            price = ba - 1 if up else bb + 1
            gainer = up
            self._set(gainer, price, self._size(), cb, ca)
            worst = self.bp[0] if gainer else self.ap[-1]
            self._set(gainer, worst, self._delete_marker(), cb, ca)

    def _step_top(self, cb: dict[int, Size], ca: dict[int, Size]) -> None:
        """Level 1: a size change, or the best price moves by a tick or two."""
        rng = self.rng
        bid = rng.random() < 0.5
        prices = self.bp if bid else self.ap
        old = prices[0]
        if rng.random() < 0.6:
            self._set(bid, old, self._size(), cb, ca)
            return
        other = self.ap[0] if bid else self.bp[0]
        move = rng.choice((-2, -1, 1, 2))
        new = old + move
        if (bid and new >= other) or (not bid and new <= other):
            new = old - abs(move) if bid else old + abs(move)
        self._set(bid, old, self._delete_marker(), cb, ca)
        self._set(bid, new, self._size(), cb, ca)

    # -- invariants (tests and self-checks) ----------------------------------------

    def check(self) -> None:
        """Raise AssertionError unless the book is full, sorted and uncrossed."""
        for name, side, prices in (("bids", self.bids, self.bp), ("asks", self.asks, self.ap)):
            if len(side) != self.depth or len(prices) != self.depth:
                raise AssertionError(f"{name}: {len(side)} levels, want {self.depth}")
            if sorted(side) != prices or len(set(prices)) != len(prices):
                raise AssertionError(f"{name}: index out of sync")
        if self.bp[-1] >= self.ap[0]:
            raise AssertionError(f"crossed: bid {self.bp[-1]} >= ask {self.ap[0]}")


class History:
    """The last ``keep`` states of one book topic, by ``u``, stored compactly."""

    def __init__(self, keep: int = 10_000, every: int = 500) -> None:
        self.keep, self.every = keep, every
        self._changes: collections.OrderedDict[int, Changes] = collections.OrderedDict()
        self._checkpoints: collections.OrderedDict[
            int, tuple[dict[int, Size], dict[int, Size]]] = collections.OrderedDict()

    def reset(self, book: Book) -> None:
        """Forget everything (a restart reuses small ``u`` values) and checkpoint."""
        self._changes.clear()
        self._checkpoints.clear()
        self._checkpoint(book)

    def _checkpoint(self, book: Book) -> None:
        self._checkpoints[book.u] = (dict(book.bids), dict(book.asks))

    def record(self, book: Book, update: Update) -> None:
        """Call after ``book.step()`` returned a changed ``update``."""
        self._changes[book.u] = (update.bids, update.asks)
        if not self._checkpoints or book.u % self.every == 0:
            self._checkpoint(book)
        while len(self._changes) > self.keep:
            self._changes.popitem(last=False)
        oldest = next(iter(self._changes))
        while len(self._checkpoints) > 1 and next(iter(self._checkpoints)) < oldest - 1:
            self._checkpoints.popitem(last=False)

    def span(self) -> tuple[int, int] | None:
        """(oldest, newest) ``u`` that ``at`` can answer, or None."""
        if not self._checkpoints:
            return None
        first = next(iter(self._checkpoints))
        last = next(reversed(self._changes)) if self._changes else first
        return first, max(first, last)

    def at(self, u: int) -> tuple[dict[int, Size], dict[int, Size]]:
        """The book (price ticks → size) right after update ``u``; KeyError if
        ``u`` is outside the kept range."""
        base = [c for c in self._checkpoints if c <= u]
        span = self.span()
        if not base or span is None or u > span[1]:
            raise KeyError(f"u={u} is not in the kept history {span}")
        start = base[-1]
        bids, asks = (dict(x) for x in self._checkpoints[start])
        for v in range(start + 1, u + 1):
            for changes, side in zip(self._changes[v], (bids, asks), strict=True):
                for price, size in changes:
                    if size in (DELETED, RPI_DELETED):
                        side.pop(price, None)
                    else:
                        side[price] = size
        return bids, asks
