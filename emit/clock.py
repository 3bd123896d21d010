"""The one source of time: wall time is the wall time at start plus trio's elapsed time.

Everything emit stamps or schedules (deadlines, backoff, scheduledFor, createdAt…) reads
this clock, never ``time.time()`` directly, so a test under trio's ``MockClock`` drives
all of it. Wall times are float seconds since the Unix epoch; the domain takes them as
arguments (``now``) and never reads a clock itself.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

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


def iso(wall: float | None) -> str | None:
    """``2026-11-28T10:30:00.000Z`` for an epoch time (None stays None)."""
    return None if wall is None else stamp(wall)


def stamp(wall: float) -> str:
    """``2026-11-28T10:30:00.000Z`` for an epoch time, formatting the date and time of
    day once per second rather than once per call: a job view carries six times, and
    ``datetime`` formatting was the top item of the HTTP batched path's profile. The
    microseconds are rounded half to even, as ``datetime.fromtimestamp`` rounds them,
    then truncated to milliseconds, so this is exactly what `datetime` gives
    (tests/domain/test_clock.py compares them)."""
    fraction, whole = math.modf(wall)
    micros = round(fraction * 1_000_000)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    if second != _second[0]:
        t = time.gmtime(second)  # not strftime: its %Y gives "171" for 171, not "0171"
        _second[:] = [
            second,
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.",
        ]
    return f"{_second[1]}{micros // 1000:03d}Z"


_second: list[Any] = [None, ""]
"""The last second `stamp` formatted, and its text up to the milliseconds."""


def parse_iso(text: str) -> float:
    """Epoch seconds from an ISO 8601 time; naive times are taken as UTC."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
