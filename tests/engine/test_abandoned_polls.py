"""A poll or claim whose caller is gone takes no job: one still queued when its caller
gave up leases nothing, and jobs leased to a caller who left before the answer could be
given (its write still committing) go back to pending without spending an attempt."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import emit
from emit.http import routes
from emit.http.auth import Caller

from .conftest import stall_commits


async def _blocked_store_read(monkeypatch: pytest.MonkeyPatch, rt: emit.Runtime) -> trio.Event:
    """Reads of a job from the store wait until the event is set: the space, handling a
    message that needs one, is busy meanwhile and its mailbox queues."""
    store = rt.store
    get_job = store.get_job
    go = trio.Event()

    async def slow_get_job(job_id: str) -> Any:
        await go.wait()
        return await get_job(job_id)

    monkeypatch.setattr(store, "get_job", slow_get_job)
    return go


@pytest.mark.parametrize("take", ["poll", "claim"])
async def test_a_request_abandoned_while_queued_takes_no_job(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, rt: emit.Runtime, take: str
) -> None:
    jobs = rt.space((await rt.create_space("s")).id)
    job = await jobs.create("j")
    go = await _blocked_store_read(monkeypatch, rt)
    async with trio.open_nursery() as nursery:
        # A kill of a job that left memory reads the store: the space waits on it.
        gone = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"
        nursery.start_soon(_refused, jobs.kill(gone))
        await wait_all_tasks_blocked()
        with trio.move_on_after(1):  # the caller gives up while its request is queued
            if take == "poll":
                await jobs.poll(ack=True)
            else:
                await jobs.claim(job.id)
        go.set()
    with trio.fail_after(5):
        counts = await jobs.counts()
        assert counts[emit.JobStatus.PENDING] == 1, counts
        view = await jobs.get(job.id)
    assert view.status == "pending" and view.events is not None
    assert [e.type for e in view.events] == ["created"]


async def _refused(call: Any) -> None:
    with pytest.raises(emit.NotFound):
        await call


@pytest.mark.parametrize("ack", [False, True])
async def test_jobs_whose_answer_was_abandoned_go_back_without_spending_an_attempt(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, rt: emit.Runtime, ack: bool
) -> None:
    jobs = rt.space((await rt.create_space("s")).id)
    job = await jobs.create("j", max_retries=0)  # one attempt: spending it kills the job
    go = stall_commits(monkeypatch, rt)
    with trio.move_on_after(1):  # leased in memory; the caller leaves before it is durable
        await jobs.poll(ack=ack)
    go.set()
    with trio.fail_after(5):
        await jobs.settled()  # the poll's write is reported: the give-back is written next
        await jobs.settled()
        view = await jobs.get(job.id)
    assert view.status == "pending" and view.attempt_number == 0 and view.events is not None
    returned = view.events[-1]
    assert returned.type == "delivery_timeout" and returned.data == {"reason": "caller_gone"}
    # Nothing is left to expire: the job waits for a worker who will see it.
    await trio.sleep(job.timeout_seconds * 2)
    with trio.fail_after(5):
        [delivery] = await jobs.poll()
    assert delivery.id == job.id and delivery.attempt_number == 0


@pytest.mark.parametrize("take", ["poll", "claim"])
async def test_a_route_cancelled_after_it_got_jobs_gives_them_back(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, rt: emit.Runtime, take: str
) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    job = await jobs.create("j")
    scope = trio.CancelScope()
    poll_request, claim = emit.SpaceJobs.poll_request, emit.SpaceJobs.claim

    # The client hangs up just as the answer arrives: the handler has the jobs, and a
    # cancellation pending.
    async def poll_then_hang_up(self: emit.SpaceJobs, request: Any) -> Any:
        answer = await poll_request(self, request)
        scope.cancel()
        return answer

    async def claim_then_hang_up(self: emit.SpaceJobs, job_id: str) -> Any:
        answer = await claim(self, job_id)
        scope.cancel()
        return answer

    monkeypatch.setattr(emit.SpaceJobs, "poll_request", poll_then_hang_up)
    monkeypatch.setattr(emit.SpaceJobs, "claim", claim_then_hang_up)
    caller = Caller("key", space.id, frozenset({"jobs:poll", "jobs:ack"}))
    call = routes.Call(rt, caller, {"job_id": job.id}, {}, {}, b"{}", 1 << 20, lambda _: None)
    with scope:
        await (routes.poll(call) if take == "poll" else routes.claim(call))
        pytest.fail("the handler answered a client that hung up")
    with trio.fail_after(5):
        await jobs.settled()
        view = await jobs.get(job.id)
    assert view.status == "pending" and view.events is not None
    assert view.events[-1].data == {"reason": "caller_gone"}
