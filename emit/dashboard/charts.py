"""The home page's chart: a space's completed and dead jobs per minute over the last hour
(`Runtime.finished_per_minute`), drawn as an inline SVG on the server. No script, no
library: bars of completed jobs rise above a middle line, bars of dead jobs hang below
it, one pair a minute, on one scale. A sentence says the same for screen readers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..isotime import iso
from ..throughput import Minute

BAR = 4
"""Width of a minute, in the SVG's units (a bar of 3 and a gap of 1)."""
HALF = 22
"""Height of the tallest bar, above the middle line for completed and below for dead."""


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: int
    height: int
    kind: str
    """"completed" or "dead"."""
    label: str
    """Its minute and count, shown on hover."""


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    middle: int
    bars: list[Bar]
    completed: int
    dead: int
    summary: str
    """The chart in words (its text alternative)."""


def _clock(minute: Minute) -> str:
    text = iso(minute.start) or ""
    return text[11:16]  # HH:MM, UTC


def finish_chart(minutes: list[Minute]) -> Chart:
    """The chart of ``minutes``, oldest first (one bar pair a minute)."""
    peak = max((max(m.completed, m.dead) for m in minutes), default=0)
    bars = []
    for index, minute in enumerate(minutes):
        x = index * BAR
        when = _clock(minute)
        if minute.completed:
            height = max(1, math.ceil(minute.completed / peak * HALF))
            label = f"{when} UTC: {minute.completed} completed"
            bars.append(Bar(x, HALF - height, height, "completed", label))
        if minute.dead:
            height = max(1, math.ceil(minute.dead / peak * HALF))
            bars.append(Bar(x, HALF + 1, height, "dead", f"{when} UTC: {minute.dead} dead"))
    completed = sum(m.completed for m in minutes)
    dead = sum(m.dead for m in minutes)
    if completed or dead:
        busiest = max(minutes, key=lambda m: m.completed + m.dead)
        summary = (
            f"In the last hour, {completed} completed and {dead} dead; the busiest minute, "
            f"{_clock(busiest)} UTC, had {busiest.completed} completed and {busiest.dead} dead."
        )
    else:
        summary = "No job completed or died in the last hour."
    return Chart(len(minutes) * BAR, 2 * HALF + 1, HALF, bars, completed, dead, summary)
