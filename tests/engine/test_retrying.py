"""Failed attempts, retry backoff, death, manual retry, and kill."""

import pytest
import trio
from trio.testing import MockClock

import emit


async def test_a_failed_attempt_is_retried_until_none_are_left(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j", max_retries=2)
    for attempt in range(3):
        [delivery] = await jobs.poll(ack=True)
        assert delivery.attempt_number == attempt
        after = await jobs.fail(job.id, f"boom {attempt}")
    assert after.status == "dead" and after.result == {"error": "boom 2"}
    assert await jobs.poll() == []
    types = [event.type for event in (await jobs.get(job.id)).events or ()]
    assert types.count(emit.EventType.RETRIED) == 2 and types[-1] == "dead"


async def test_max_retries_zero_runs_once(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j", max_retries=0)
    await jobs.poll()
    assert (await jobs.fail(job.id, "once")).status == "dead"


async def test_per_job_backoff_schedules_the_retry(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    backoff = {"initialSeconds": 10, "factor": 3, "maxSeconds": 40}
    job = await jobs.create("j", max_retries=5, retry_backoff=backoff)
    waits = []
    for _ in range(4):
        await jobs.poll(ack=True)
        failed = await jobs.fail(job.id, "x")
        assert failed.status == "scheduled" and failed.scheduled_for is not None
        start = trio.current_time()
        assert await jobs.poll(wait=60) != []
        waits.append(round(trio.current_time() - start, 3))
    assert waits == [10, 30, 40, 40]


async def test_the_space_default_backoff_applies_to_jobs_without_their_own(
    autojump_clock: MockClock, rt: emit.Runtime, jobs: emit.SpaceJobs
) -> None:
    await rt.update_space(
        jobs.space_id, {"retryBackoff": {"initialSeconds": 5, "factor": 1, "maxSeconds": 5}}
    )
    job = await jobs.create("j")
    await jobs.poll()
    assert (await jobs.fail(job.id, "x")).status == "scheduled"
    start = trio.current_time()
    await jobs.poll(wait=60)
    assert trio.current_time() - start == pytest.approx(5)


async def test_without_backoff_a_retry_is_immediate(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    await jobs.poll()
    assert (await jobs.fail(job.id, "x")).status == "pending"
    [again] = await jobs.poll()
    assert again.attempt_number == 1


@pytest.mark.parametrize("state", ["scheduled", "pending", "delivered", "running"])
async def test_kill_from_every_live_state(
    rt: emit.Runtime, jobs: emit.SpaceJobs, state: str
) -> None:
    if state == "scheduled":
        job = await jobs.create("j", scheduled_for=emit.runtime.iso(rt.clock.now() + 60))
    else:
        job = await jobs.create("j")
        if state != "pending":
            await jobs.poll(ack=state == "running")
    assert (await jobs.get(job.id)).status == state
    killed = await jobs.kill(job.id, "not needed")
    assert killed.status == "killed" and killed.result == {"reason": "not needed"}
    assert await jobs.poll() == []
    counts = await jobs.counts()
    assert counts[emit.JobStatus.KILLED] == 1 and counts[emit.JobStatus(state)] == 0


async def test_manual_retry_brings_a_dead_or_killed_job_back(jobs: emit.SpaceJobs) -> None:
    dead = await jobs.create("j", max_retries=0)
    killed = await jobs.create("j")
    await jobs.poll(count=1)
    await jobs.fail(dead.id, "x")
    await jobs.kill(killed.id)
    for job in (dead, killed):
        back = await jobs.retry(job.id)
        assert (back.status, back.attempt_number, back.result) == ("pending", 0, None)
    assert len(await jobs.poll(count=5)) == 2
    assert (await jobs.counts())[emit.JobStatus.DELIVERED] == 2


async def test_only_dead_or_killed_jobs_can_be_retried(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    with pytest.raises(emit.Conflict, match="pending"):
        await jobs.retry(job.id)
    await jobs.poll()
    await jobs.complete(job.id)
    with pytest.raises(emit.Conflict, match="completed"):
        await jobs.retry(job.id)
