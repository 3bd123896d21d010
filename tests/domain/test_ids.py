"""Hand-made monotonic ULIDs: valid, time-stamped, strictly increasing, also across a
carry out of the cached low characters."""

from __future__ import annotations

import itertools

from ulid import ULID

from emit.ids import MonotonicIds

WALL = 1_700_000_000.123


def test_ids_are_ulids_of_their_time() -> None:
    ids = MonotonicIds()
    made = ids.next(WALL)
    assert len(made) == 26
    assert ULID.from_str(made).timestamp == int(WALL * 1000) / 1000


def test_ids_increase_within_a_millisecond_and_across_a_carry() -> None:
    ids = MonotonicIds()
    # 2,100 ids in one millisecond: the low 10 bits wrap (a carry into the cached part)
    # at least twice, wherever the random start fell.
    made = [ids.next(WALL) for _ in range(2_100)]
    assert made == sorted(made) and len(set(made)) == len(made)
    values = [int(ULID.from_str(i)) for i in made]
    assert all(b - a == 1 for a, b in itertools.pairwise(values))


def test_a_new_millisecond_restarts_the_random_part_and_a_clock_step_back_does_not() -> None:
    ids = MonotonicIds()
    a = ids.next(WALL)
    b = ids.next(WALL - 5)  # the clock stepped back: still after a
    c = ids.next(WALL + 1)
    assert a < b < c
    assert ULID.from_str(b).timestamp == ULID.from_str(a).timestamp
    assert ULID.from_str(c).timestamp == int((WALL + 1) * 1000) / 1000
