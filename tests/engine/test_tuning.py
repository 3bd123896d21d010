"""`emit.tune_gc`: what it changes in the process (restored afterwards)."""

from __future__ import annotations

import gc

import emit
from emit.tuning import THRESHOLDS


def test_tune_gc_freezes_what_exists_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        emit.tune_gc()
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
