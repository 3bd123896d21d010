"""The one source of time: wall time is the wall time at start plus trio's elapsed time.

Everything emit stamps or schedules (deadlines, backoff, scheduledFor, createdAt…) reads
this clock, never ``time.time()`` directly, so a test under trio's ``MockClock`` drives
all of it. Wall times are float seconds since the Unix epoch; the domain takes them as
arguments (``now``) and never reads a clock itself.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

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
    if wall is None:
        return None
    stamp = datetime.fromtimestamp(wall, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Epoch seconds from an ISO 8601 time; naive times are taken as UTC."""
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
