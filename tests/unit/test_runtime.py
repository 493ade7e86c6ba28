"""tune_gc: the start-up heap leaves the collected generations; thresholds raised; undoable."""

from __future__ import annotations

import gc

from connector.ops.runtime import THRESHOLDS, restore_gc, tune_gc


def test_tune_gc_freezes_the_startup_heap_and_raises_thresholds() -> None:
    startup = [[i] for i in range(50_000)]  # long-lived containers, like parsed schemas
    gc.collect()
    before = len(gc.get_objects(generation=2))
    tuning = tune_gc()
    try:
        assert gc.get_threshold() == THRESHOLDS
        assert tuning.frozen_objects >= 50_000
        # A full collection no longer walks them: they left generation 2.
        assert len(gc.get_objects(generation=2)) < before - 50_000
        assert gc.get_freeze_count() == tuning.frozen_objects
    finally:
        restore_gc(tuning)
    assert gc.get_threshold() == tuning.previous_thresholds
    assert gc.get_freeze_count() == 0
    assert startup[-1] == [49_999]


def test_tune_gc_without_freeze_only_sets_thresholds() -> None:
    tuning = tune_gc((1_000, 15, 15), freeze=False)
    try:
        assert gc.get_threshold() == (1_000, 15, 15)
        assert tuning.frozen_objects == 0 and gc.get_freeze_count() == 0
    finally:
        restore_gc(tuning)
