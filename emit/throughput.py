"""Jobs finished per minute over the last hour, per space: what the dashboard's home
page charts (docs/dashboard.md, "The chart").

Pure counting, with ``now`` (wall seconds) passed in: a space's `SpaceMeter` adds a
write's completed and dead jobs once it is durable (the hook that counts
``emit_jobs_finished``), and a reader asks for the last hour. Each space keeps a ring of
`WINDOW` minute buckets, each stamped with the minute it counts, so a bucket of an
earlier hour reads as zero and is reused: the memory is fixed, with no timer to slide it.

The counts live in memory only, in the runtime's `Metrics`, so they outlive a restart
of a space's actor but not of the server: a new server starts with an empty chart.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = 60
"""Minutes kept: the last hour, the current minute included."""


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute of a space's finishes."""

    start: float
    """The minute's first second, wall time (epoch seconds)."""
    completed: int
    dead: int


class Throughput:
    """One space's completed and dead jobs per minute, for the last `WINDOW` minutes."""

    __slots__ = ("_completed", "_dead", "_stamps")

    def __init__(self) -> None:
        self._stamps = [-1] * WINDOW
        """The minute (wall seconds // 60) each slot counts; another minute's slot is 0."""
        self._completed = [0] * WINDOW
        self._dead = [0] * WINDOW

    def add(self, now: float, completed: int = 0, dead: int = 0) -> None:
        """Count jobs that finished at ``now``."""
        minute = int(now // 60)
        slot = minute % WINDOW
        if self._stamps[slot] != minute:
            self._stamps[slot] = minute
            self._completed[slot] = 0
            self._dead[slot] = 0
        self._completed[slot] += completed
        self._dead[slot] += dead

    def last_hour(self, now: float) -> list[Minute]:
        """The `WINDOW` minutes up to ``now``'s, oldest first (the last one is still
        counting)."""
        current = int(now // 60)
        minutes = []
        for minute in range(current - WINDOW + 1, current + 1):
            slot = minute % WINDOW
            if self._stamps[slot] == minute:
                minutes.append(Minute(minute * 60.0, self._completed[slot], self._dead[slot]))
            else:
                minutes.append(Minute(minute * 60.0, 0, 0))
        return minutes
