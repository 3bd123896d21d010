"""A server shutting down answers the long polls parked in it with no jobs
(`Runtime.release_pollers`), and from then on parks none: a worker polling again at once,
on a connection still open, is answered at once too, so the shutdown does not wait out
its grace period for it. Jobs ready meanwhile are still handed out."""

import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import emit


async def test_after_release_polls_are_answered_at_once(
    autojump_clock: MockClock, rt: emit.Runtime, jobs: emit.SpaceJobs
) -> None:
    answers: list[list[emit.Delivery]] = []
    async with trio.open_nursery() as nursery:

        async def poll() -> None:
            answers.append(await jobs.poll(1, wait=30))

        nursery.start_soon(poll)
        await wait_all_tasks_blocked()
        assert await jobs.pollers() == 1
        start = trio.current_time()
        assert await rt.release_pollers() == 1
    assert answers == [[]]
    assert await jobs.poll(1, wait=30) == []
    assert trio.current_time() == start  # parked for none of its 30 s
    job = await jobs.create("j")
    [delivery] = await jobs.poll(1, wait=30)
    assert delivery.id == job.id
