"""Leases and deadlines: fencing with leaseId, the ack deadline, the run deadline, and
the calls that restart it."""

import pytest
import trio
from trio.testing import MockClock

import emit


async def test_a_stale_lease_is_refused_and_changes_nothing(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    job = await jobs.create("j", timeout_seconds=10)
    [first] = await jobs.poll()
    await trio.sleep(11)  # ack deadline: back to pending, and delivered again
    [second] = await jobs.poll()
    assert second.id == first.id and second.lease_id != first.lease_id
    before = await jobs.get(job.id)
    for call in (
        lambda: jobs.ack(job.id, lease_id=first.lease_id),
        lambda: jobs.progress(job.id, 10, "x", lease_id=first.lease_id),
        lambda: jobs.keepalive(job.id, lease_id=first.lease_id),
        lambda: jobs.complete(job.id, "r", lease_id=first.lease_id),
        lambda: jobs.fail(job.id, "e", lease_id=first.lease_id),
        lambda: jobs.checkpoint(job.id, {"a": 1}, lease_id=first.lease_id),
        lambda: jobs.event(job.id, "note", lease_id=first.lease_id),
        lambda: jobs.log(job.id, "info", "m", lease_id=first.lease_id),
    ):
        with pytest.raises(emit.Conflict, match="stale"):
            await call()
    assert await jobs.get(job.id) == before
    await jobs.ack(job.id, lease_id=second.lease_id)
    done = await jobs.complete(job.id, "r", lease_id=second.lease_id)
    assert done.status == "completed"


async def test_calls_without_a_lease_are_judged_by_state(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    with pytest.raises(emit.Conflict, match="cannot ack a job that is pending"):
        await jobs.ack(job.id)
    await jobs.poll()
    await jobs.ack(job.id)
    with pytest.raises(emit.Conflict, match="cannot ack a job that is running"):
        await jobs.ack(job.id)
    await jobs.complete(job.id)
    for call in (jobs.ack, jobs.keepalive, jobs.complete, jobs.kill):
        with pytest.raises(emit.Conflict, match="completed"):
            await call(job.id)


async def test_a_worker_that_skips_ack_can_still_complete(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    await jobs.poll()
    assert (await jobs.complete(job.id, 1)).status == "completed"


async def test_a_missed_ack_deadline_requeues_without_using_a_retry(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    job = await jobs.create("j", timeout_seconds=5, max_retries=0)
    for _ in range(3):
        [delivery] = await jobs.poll()
        assert delivery.attempt_number == 0
        await trio.sleep(6)
    stored = await jobs.get(job.id)
    assert stored.status == "pending" and stored.attempt_number == 0
    types = [event.type for event in stored.events or ()]
    assert types == ["created"] + ["delivered", "delivery_timeout"] * 3


async def test_a_missed_run_deadline_is_a_failed_attempt_with_error_timeout(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    job = await jobs.create("j", timeout_seconds=5, max_retries=1)
    await jobs.poll(ack=True)
    await trio.sleep(6)
    stored = await jobs.get(job.id)
    assert (stored.status, stored.attempt_number) == ("pending", 1)
    retried = (stored.events or ())[-1]
    assert retried.type == "retried" and retried.data == {"error": "timeout", "attemptNumber": 1}
    await jobs.poll(ack=True)
    await trio.sleep(6)
    stored = await jobs.get(job.id)
    assert stored.status == "dead" and stored.result == {"error": "timeout"}


@pytest.mark.parametrize("call", ["progress", "checkpoint", "keepalive"])
async def test_progress_checkpoint_and_keepalive_restart_the_run_deadline(
    autojump_clock: MockClock, jobs: emit.SpaceJobs, call: str
) -> None:
    job = await jobs.create("j", timeout_seconds=10)
    await jobs.poll(ack=True)
    for _ in range(5):  # 40 s of work in all, never 10 s without a sign of life
        await trio.sleep(8)
        if call == "progress":
            await jobs.progress(job.id, 50, "working")
        elif call == "checkpoint":
            await jobs.checkpoint(job.id, {"step": 1})
        else:
            await jobs.keepalive(job.id)
    assert (await jobs.get(job.id)).status == "running"
    await trio.sleep(11)
    assert (await jobs.get(job.id)).attempt_number == 1


async def test_keepalive_with_seconds_sets_the_deadline(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    job = await jobs.create("j", timeout_seconds=10)
    await jobs.poll(ack=True)
    await jobs.keepalive(job.id, seconds=100)
    await trio.sleep(99)
    assert (await jobs.get(job.id)).status == "running"
    await trio.sleep(2)
    assert (await jobs.get(job.id)).attempt_number == 1
    with pytest.raises(emit.InvalidRequest, match="seconds"):
        await jobs.keepalive(job.id, seconds=0)


async def test_keepalive_also_extends_an_ack_deadline(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    job = await jobs.create("j", timeout_seconds=10)
    await jobs.poll()
    await jobs.keepalive(job.id, seconds=30)
    await trio.sleep(25)
    assert (await jobs.get(job.id)).status == "delivered"


async def test_the_checkpoint_is_handed_to_the_next_attempt(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    job = await jobs.create("j")
    [first] = await jobs.poll(ack=True)
    assert first.checkpoint is None
    await jobs.checkpoint(job.id, {"page": 7})
    await jobs.fail(job.id, "network")
    [second] = await jobs.poll()
    assert second.attempt_number == 1 and second.checkpoint == {"page": 7}
