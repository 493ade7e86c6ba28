"""Book continuity (connector/bybit/books.py), without sockets."""

from __future__ import annotations

from connector.bybit.books import BookTracker

B = ("orderbook.50", "BTCUSDT")


def fed(*frames: tuple[bool, int, int | None]) -> tuple[BookTracker, list[str]]:
    tracker = BookTracker()
    return tracker, [tracker.check(*B, snap, u, seq) for snap, u, seq in frames]


def test_snapshot_then_consecutive_deltas_are_ok() -> None:
    _, verdicts = fed((True, 100, 10), (False, 101, 12), (False, 102, 15))
    assert verdicts == ["ok", "ok", "ok"]


def test_stale_and_duplicate_deltas_are_dropped_without_resync() -> None:
    tracker, verdicts = fed((True, 100, 10), (False, 101, 11), (False, 101, 11),
                            (False, 99, None), (False, 102, 12))
    assert verdicts == ["ok", "ok", "stale", "stale", "ok"]
    assert tracker.take_reason(*B) is None


def test_gap_waits_for_the_next_snapshot_which_carries_the_reason() -> None:
    tracker, verdicts = fed((True, 100, 10), (False, 103, 13), (False, 104, 14))
    assert verdicts == ["ok", "gap", "before_snapshot"]
    assert tracker.check(*B, True, 500, 50) == "ok"
    assert tracker.take_reason(*B) == "gap"
    assert tracker.take_reason(*B) is None  # once
    assert tracker.check(*B, False, 501, 51) == "ok"


def test_seq_going_backwards_is_out_of_order() -> None:
    tracker, verdicts = fed((True, 100, 50), (False, 101, 40))
    assert verdicts == ["ok", "out_of_order"]
    assert tracker.check(*B, True, 200, 60) == "ok"
    assert tracker.take_reason(*B) == "out_of_order"


def test_seq_with_holes_is_fine() -> None:
    _, verdicts = fed((True, 100, 50), (False, 101, 90), (False, 102, 91))
    assert verdicts == ["ok", "ok", "ok"]


def test_u1_restart_snapshot_resets() -> None:
    tracker, verdicts = fed((True, 28750112, 5), (False, 28750113, 6), (True, 1, 7),
                            (False, 2, 8))
    assert verdicts == ["ok", "ok", "ok", "ok"]
    assert tracker.last_u(*B) == 2


def test_delta_before_any_snapshot_is_dropped() -> None:
    _, verdicts = fed((False, 5, None), (True, 6, None), (False, 7, None))
    assert verdicts == ["before_snapshot", "ok", "ok"]


def test_resubscribe_or_reconnect_waits_for_a_snapshot() -> None:
    tracker, _ = fed((True, 100, 10), (False, 101, 11))
    tracker.expect_snapshot(*B)
    assert tracker.check(*B, False, 102, 12) == "before_snapshot"
    assert tracker.check(*B, True, 300, 30) == "ok"
    assert tracker.take_reason(*B) is None  # a plain resubscribe is no resync


def test_level1_is_snapshot_only_repeats_and_skips_are_ok() -> None:
    tracker = BookTracker()
    one = ("orderbook.1", "BTCUSDT")
    verdicts = [tracker.check(*one, True, 10, 1), tracker.check(*one, True, 10, 1),
                tracker.check(*one, True, 15, 3), tracker.check(*one, False, 14, 2)]
    assert verdicts == ["ok", "ok", "ok", "ok"]


def test_books_are_independent() -> None:
    tracker = BookTracker()
    assert tracker.check("orderbook.50", "BTCUSDT", True, 100) == "ok"
    assert tracker.check("orderbook.200", "BTCUSDT", False, 101) == "before_snapshot"
    assert tracker.check("orderbook.50", "ETHUSDT", False, 101) == "before_snapshot"
    assert tracker.check("orderbook.50", "BTCUSDT", False, 101) == "ok"


def test_a_frame_not_written_breaks_a_live_chain_once() -> None:
    tracker, _ = fed((True, 100, 10), (False, 101, 11))
    assert tracker.position(*B) == (101, 11)
    assert tracker.break_chain(*B, "dropped") is True  # live: marker and resubscribe
    assert tracker.position(*B) == (None, None)
    assert tracker.check(*B, False, 102, 12) == "before_snapshot"
    assert tracker.break_chain(*B, "delivery_failed") is False  # a snapshot is awaited
    assert tracker.check(*B, True, 105, 15) == "ok"
    assert tracker.take_reason(*B) == "dropped"  # the first reason, on the snapshot


def test_only_books_subscribed_or_written_are_known() -> None:
    tracker = BookTracker()
    assert not tracker.knows(*B)
    tracker.expect_snapshot(*B)
    assert tracker.knows(*B) and not tracker.knows("orderbook.50", "ETHUSDT")
