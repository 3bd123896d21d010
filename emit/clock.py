"""The one source of time: wall time is the wall time at start plus trio's elapsed time.

Everything emit stamps or schedules (deadlines, backoff, scheduledFor, createdAt…) reads
this clock, never ``time.time()`` directly, so a test under trio's ``MockClock`` drives
all of it. Wall times are float seconds since the Unix epoch; the domain takes them as
arguments (``now``) and never reads a clock itself. Writing and reading those times as
ISO 8601 text is `emit.isotime`'s, which reads no clock.
"""

from __future__ import annotations

import time

import trio


class Clock:
    """Maps trio time to wall time with one offset, read once when made."""

    __slots__ = ("_offset",)

    def __init__(self, wall_at_start: float | None = None) -> None:
        wall = time.time() if wall_at_start is None else wall_at_start
        self._offset = wall - trio.current_time()

    def now(self) -> float:
        """The wall time now (epoch seconds)."""
        return trio.current_time() + self._offset

    def to_trio(self, wall: float) -> float:
        """The trio time at which the wall clock will read ``wall``."""
        return wall - self._offset
