"""The local exchange's v5 book generator, history and pure helpers (no sockets)."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pytest

from connector.exchange.v5 import max_active, signature
from connector.exchange.v5_books import Book, History, price_text
from connector.exchange.v5_feeds import parse_public
from connector.exchange.v5_private import SpotAccount

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def apply(side: dict[int, object], changes: list[tuple[int, object]]) -> None:
    for price, size in changes:
        if size in ("0", ("0", "0")):
            assert price in side, f"delete of unknown price {price}"
            del side[price]
        else:
            side[price] = size


@pytest.mark.parametrize(("depth", "rpi", "steps"), [
    (50, False, 100_000), (200, False, 30_000), (1000, False, 10_000), (50, True, 30_000),
    (1, False, 30_000)])
def test_generated_deltas_keep_books_full_sorted_uncrossed(depth: int, rpi: bool,
                                                           steps: int) -> None:
    book = Book(depth, 12_195_840, random.Random(depth), u=1000, rpi=rpi)
    bids, asks = dict(book.bids), dict(book.asks)
    start_mid = book.mid()
    for i in range(steps):
        u = book.u
        update = book.step()
        assert update.changed and book.u == u + 1
        assert [p for p, _ in update.bids] == sorted({p for p, _ in update.bids}, reverse=True)
        assert [p for p, _ in update.asks] == sorted({p for p, _ in update.asks})
        apply(bids, update.bids)
        apply(asks, update.asks)
        assert len(bids) == depth and len(asks) == depth  # exactly N a side, every update
        assert max(bids) < min(asks) if i % 50 == 0 else True
        if i % 997 == 0:
            book.check()
            assert bids == book.bids and asks == book.asks
    book.check()
    assert bids == book.bids and asks == book.asks
    # the mid moved but stayed sane: neither drained nor run away
    assert abs(book.mid() - start_mid) < start_mid // 10


def test_level_one_changes_only_sometimes() -> None:
    book = Book(1, 10_000, random.Random(3), u=5, change_prob=0.0)
    assert not book.step().changed and book.u == 5
    book.change_prob = 1.0
    assert book.step().changed and book.u == 6


def test_history_answers_every_kept_u_and_forgets_older_ones() -> None:
    book = Book(50, 1_000_000, random.Random(9), u=100)
    history = History(keep=300, every=40)
    history.reset(book)
    states = {book.u: (dict(book.bids), dict(book.asks))}
    for _ in range(1000):
        update = book.step()
        history.record(book, update)
        states[book.u] = (dict(book.bids), dict(book.asks))
    span = history.span()
    assert span is not None
    lo, hi = span
    assert hi == book.u and hi - lo >= 299 - 40
    for u in range(lo, hi + 1):
        assert history.at(u) == states[u]
    with pytest.raises(KeyError):
        history.at(lo - 1)
    with pytest.raises(KeyError):
        history.at(hi + 1)
    book.reset(book.mid(), 1)
    history.reset(book)
    assert history.span() == (1, 1) and history.at(1) == (book.bids, book.asks)


def test_signature_matches_the_documented_test_vector() -> None:
    sample = json.loads((SAMPLES / "v5" / "auth_request.json").read_text())
    key, expires, sig = sample["args"]
    assert signature("aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5", expires) == sig
    assert sig == "e504a7dc39678f86a3eed025e579cc11ab053b1439bbf29dac699c35c9ea9bbb"
    assert key == "8fK2pQm7Zr4TxW1bNc" and expires == 1760000010000


@pytest.mark.parametrize(("topic", "kind"), [
    ("orderbook.1.BTCUSDT", "orderbook.1"), ("orderbook.1000.ETHUSDT", "orderbook.1000"),
    ("orderbook.rpi.BTCUSDT", "orderbook.rpi"), ("publicTrade.BTCUSDT", "publicTrade"),
    ("tickers.BTCUSDT", "tickers"), ("kline.D.BTCUSDT", "kline.D"),
    ("kline.1.BTCUSDT", "kline.1"), ("priceLimit.BTCUSDT", "priceLimit"),
    ("orderbook.25.BTCUSDT", None), ("orderbook.50.btcusdt", None), ("kline.1m.BTCUSDT", None),
    ("kline.2.BTCUSDT", None), ("trade.BTCUSDT", None), ("order", None),
    ("orderbook.full.BTCUSDT", None), ("publicTrade.INVALIDX", None), ("tickers", None)])
def test_public_topics_bybit_knows(topic: str, kind: str | None) -> None:
    spec = parse_public(topic)
    assert (spec.kind if spec else None) == kind


@pytest.mark.parametrize(("query", "seconds"), [
    ("max_active_time=1m", 60.0), ("max_active_time=45s", 45.0), ("max_active_time=5s", 30.0),
    ("max_active_time=20m", 600.0), ("max_active_time=abc", None), ("", None)])
def test_max_active_time(query: str, seconds: float | None) -> None:
    assert max_active(query) == seconds


def test_price_text() -> None:
    assert price_text(12_195_840) == "121958.40"
    assert price_text(5) == "0.05"
    assert price_text(7, 0) == "7"


def test_simulated_account_lifecycles() -> None:
    """Every order: New first, fills add up to its qty when Filled; the rare
    shapes (double Filled, cancels, multi-fill messages) all occur."""
    account = SpotAccount(seed=5)
    status: dict[str, list[str]] = {}
    filled_qty: dict[str, Decimal] = {}
    multi_fill = double = 0
    exec_ids: set[str] = set()
    qty: dict[str, Decimal] = {}
    for _ in range(3000):
        for stream, rows, msg_id in account.step():
            assert rows and (msg_id is None) == (stream == "execution.fast")
            if stream == "order":
                row = rows[0]
                status.setdefault(row["orderId"], []).append(row["orderStatus"])
                qty[row["orderId"]] = Decimal(row["qty"])
            elif stream == "execution":
                multi_fill += len(rows) > 1
                for r in rows:
                    assert r["execId"] not in exec_ids
                    exec_ids.add(r["execId"])
                    filled_qty[r["orderId"]] = filled_qty.get(r["orderId"], Decimal(0)) + Decimal(
                        r["execQty"])
    finals = {s[-1] for s in status.values()}
    assert {"Filled", "Cancelled", "PartiallyFilledCanceled"} <= finals | {"New"}
    for order_id, seen in status.items():
        assert seen[0] == "New"
        double += seen[-2:] == ["Filled", "Filled"]
        if seen[-1] == "Filled":
            assert filled_qty[order_id] == qty[order_id]
        elif seen[-1] == "PartiallyFilledCanceled":
            assert 0 < filled_qty[order_id] < qty[order_id]
    assert double > 0 and multi_fill > 0
