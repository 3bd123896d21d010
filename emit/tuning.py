"""Process tuning for a program whose main work is emit.

CPython's collector walks every tracked object of the process in a full collection. A
job queue keeps many long-lived objects (every live job, and everything made at start),
and makes a few dozen short-lived ones per job, so with the default thresholds
(700, 10, 10) full collections come every few thousand jobs and each walks the whole
heap: measured on the embedded lifecycle (bench/engine.py), about 16 µs of a job's
60 µs on the event loop went to the collector, 12 of them to full collections.

`tune_gc` moves what exists now out of the collector's sight (``gc.freeze()``) and
collects the young generation after 50,000 allocations instead of 700, the older ones
rarely. Memory held by garbage cycles is then freed later, not never. It changes the
whole process: `emit serve` calls it; a program that embeds emit calls it if it wants
the same, after its own start-up.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Freeze the objects made so far and raise the collector's thresholds."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
