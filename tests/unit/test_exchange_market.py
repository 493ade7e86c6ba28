"""The local exchange's generated market stays healthy for hours.

The book is rebuilt here from the frames alone (Bybit's rules: a level with
quantity "0" is removed, any other replaces), never from the generator's
own state.
"""

from __future__ import annotations

from decimal import Decimal

from connector.exchange.market import DiffBook, Market


def apply(book: dict[Decimal, str], levels: list[list[str]]) -> tuple[int, int]:
    inserts = deletes = 0
    for price, qty in levels:
        p = Decimal(price)
        if qty == "0":
            assert p in book, f"delete of a level not on the book: {price}"
            del book[p]
            deletes += 1
        else:
            inserts += p not in book
            book[p] = qty
    return inserts, deletes


def test_diff_depth_book_stays_full_sorted_and_uncrossed_for_100k_deltas() -> None:
    market = Market(seed=3)
    gen = DiffBook(market, market.symbol("BTCUSDT"))
    snap = gen.snapshot()
    bid_prices = [Decimal(p) for p, _ in snap["b"]]
    ask_prices = [Decimal(p) for p, _ in snap["a"]]
    assert bid_prices == sorted(bid_prices, reverse=True) and ask_prices == sorted(ask_prices)
    bids = {Decimal(p): q for p, q in snap["b"]}
    asks = {Decimal(p): q for p, q in snap["a"]}
    inserts = deletes = 0
    best_bids = set()
    for n in range(1, 100_001):
        delta = gen.delta()
        assert delta["b"] and delta["a"] and delta["o"] == n + 1
        for side, levels in ((bids, delta["b"]), (asks, delta["a"])):
            i, d = apply(side, levels)
            inserts, deletes = inserts + i, deletes + d
        assert len(bids) == 200 and len(asks) == 200, n
        assert max(bids) < min(asks), f"crossed after {n} deltas"
        if n % 1000 == 0:
            best_bids.add(max(bids))
            assert all(Decimal(q) > 0 for q in [*bids.values(), *asks.values()])
    assert inserts > 10_000 and deletes > 10_000
    assert len(best_bids) > 10  # the top of the book moves
    # The generator's own view agrees with the book built from its frames.
    final = gen.snapshot()
    assert {Decimal(p): q for p, q in final["b"]} == bids
    assert {Decimal(p): q for p, q in final["a"]} == asks


def test_market_trades_without_listeners_and_keeps_the_tape() -> None:
    market = Market(seed=3)
    sym = market.symbol("ETHUSDT")
    cursor = sym.count
    for _ in range(100):
        market.tick()
    tape = market.trade_tape("ETHUSDT")
    assert len(tape) == 160  # 60 of history, then one per tick
    ids = [int(t["v"]) for t in tape]
    assert ids == sorted(set(ids))
    assert sym.trades_after(cursor) == tape[60:]
    assert list(sym.trades) == tape[-60:]
    assert market.trade_tape("UNKNOWN") == []
