"""Jobs finished per minute over the last hour (the dashboard's chart): counted once
durable, in minute buckets of wall time, the hour sliding on the autojump clock."""

from __future__ import annotations

from collections.abc import Callable

import trio
from trio.testing import MockClock

import emit
from emit.store.base import Store
from emit.throughput import WINDOW, Minute, Throughput


def test_minute_buckets_and_the_hour_sliding() -> None:
    recent = Throughput()
    start = 1_800_000_000.0  # a minute's first second
    recent.add(start + 5, completed=2)
    recent.add(start + 59, completed=1, dead=1)
    recent.add(start + 60, dead=3)
    hour = recent.last_hour(start + 61)
    assert len(hour) == WINDOW
    assert hour[-2:] == [Minute(start, 3, 1), Minute(start + 60, 0, 3)]
    assert sum(m.completed for m in hour[:-2]) == sum(m.dead for m in hour[:-2]) == 0
    # 59 minutes on, the first minute is the oldest one shown; a minute later it is gone
    assert recent.last_hour(start + 59 * 60)[0] == Minute(start, 3, 1)
    assert recent.last_hour(start + 60 * 60)[0] == Minute(start + 60, 0, 3)
    assert all(m.completed == 0 for m in recent.last_hour(start + 60 * 60))
    # Its slot is reused by the same minute of the next hour, counting from zero
    recent.add(start + 3600, completed=7)
    assert recent.last_hour(start + 3600)[-1] == Minute(start + 3600, 7, 0)
    assert recent.last_hour(start + 3600)[0] == Minute(start + 60, 0, 3)


async def _finish(jobs: emit.SpaceJobs, name: str, *, die: bool = False) -> None:
    job = await jobs.create(name, max_retries=0)
    await jobs.claim(job.id)
    await jobs.ack(job.id)
    if die:
        await jobs.fail(job.id, "boom")
    else:
        await jobs.complete(job.id, {"ok": True})


async def test_the_runtime_counts_completions_and_deaths_by_minute(
    autojump_clock: MockClock,
    new_store: Callable[[], Store],
) -> None:
    with trio.fail_after(2 * 3600):  # the autojump clock's hours, not real ones
        async with emit.open_runtime(new_store(), start_time=1_800_000_000.0) as rt:
            space = (await rt.create_space("s")).id
            other = (await rt.create_space("other")).id
            jobs = rt.space(space)
            assert rt.finished_per_minute(space) == [
                Minute(1_800_000_000.0 + 60 * m, 0, 0) for m in range(-59, 1)
            ]
            await _finish(jobs, "a")
            await _finish(jobs, "b")
            await _finish(jobs, "c", die=True)
            killed = await jobs.create("k")
            await jobs.kill(killed.id)  # neither completed nor dead
            await jobs.retry(killed.id)
            await trio.sleep(60)
            await _finish(jobs, "d", die=True)
            hour = rt.finished_per_minute(space)
            assert [(m.completed, m.dead) for m in hour[-2:]] == [(2, 1), (0, 1)]
            assert sum(m.completed + m.dead for m in rt.finished_per_minute(other)) == 0

            await trio.sleep(58 * 60)  # the first minute is the oldest one left
            assert (rt.finished_per_minute(space)[0].completed, hour[-2].dead) == (2, 1)
            await trio.sleep(60)  # and now it has slid out of the hour
            hour = rt.finished_per_minute(space)
            assert [(m.completed, m.dead) for m in hour[:1]] == [(0, 1)]
            await trio.sleep(60)
            assert sum(m.completed + m.dead for m in rt.finished_per_minute(space)) == 0

            await _finish(jobs, "e")
            await rt.delete_space(space)  # a deleted space's counts go with it
            assert sum(m.completed for m in rt.finished_per_minute(space)) == 0
