"""Wall times as the wire writes them: ISO 8601 text from epoch seconds, and back.

Pure: it reads no clock (emit/clock.py does), so the domain can use it without trio.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any


def iso(wall: float | None) -> str | None:
    """``2026-11-28T10:30:00.000Z`` for an epoch time (None stays None)."""
    return None if wall is None else stamp(wall)


def stamp(wall: float) -> str:
    """``2026-11-28T10:30:00.000Z`` for an epoch time, formatting the date and time of
    day once per second rather than once per call: a job view carries six times, and
    ``datetime`` formatting was the top item of the HTTP batched path's profile. The
    microseconds are rounded half to even, as ``datetime.fromtimestamp`` rounds them,
    then truncated to milliseconds, so this is exactly what `datetime` gives
    (tests/domain/test_isotime.py compares them)."""
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
