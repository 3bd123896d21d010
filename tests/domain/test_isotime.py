"""Time stamps: the fast `stamp` (and so `iso`) gives exactly what `datetime` gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from emit.isotime import iso, stamp


def _reference(wall: float) -> str:
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_stamp_is_datetimes_text_to_the_character() -> None:
    rnd = random.Random(5)
    walls = [rnd.uniform(-1e9, 4e9) for _ in range(50_000)]
    base = 1_764_323_755.0
    for ms in range(1000):  # every millisecond, and either side of each boundary
        for offset in (0.0, 0.0005, 0.0004995, 0.0000005, 0.0009995, 0.0009999995):
            walls.append(base + ms / 1000 + offset)
    walls += [0.0, -0.0005, 999_999_999.9999996, base + 0.9999995, base - 1e-7]
    assert [stamp(wall) for wall in walls] == [_reference(wall) for wall in walls]


def test_iso_keeps_none() -> None:
    assert iso(None) is None
    assert iso(1_764_323_755.038) == "2025-11-28T09:55:55.038Z"


def test_a_year_before_1000_has_four_digits() -> None:
    """ISO 8601 and RFC 3339 years have four digits; strftime's %Y gives "171" for 171
    (a log line may carry such a ``ts``: the API fuzzer found it)."""
    for text in ("0171-02-20T15:13:54+00:00", "0001-01-01T00:00:00+00:00"):
        wall = datetime.fromisoformat(text).timestamp()
        assert stamp(wall) == _reference(wall) == f"{text[:19]}.000Z"
