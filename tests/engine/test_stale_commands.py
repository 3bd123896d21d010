"""A command on a job that left memory (a stale complete, a retry of a dead job) reads
the job from the store without waiting for the writes in flight: the space keeps
applying other commands meanwhile, and a job that ended in a write still in flight is
answered from memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import emit
from emit.domain.commands import RecordCallback
from emit.domain.model import EventType
from emit.domain.records import Callback
from emit.store.base import Store

from .conftest import stall_commits


async def test_a_stale_complete_reads_the_store_while_a_write_is_in_flight(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        finished = await jobs.create("finished")
        await jobs.poll(ack=True)
        await jobs.complete(finished.id, 1)  # durable: only the store has it now
        get_job, read = rt.store.get_job, trio.Event()

        async def watched_get_job(job_id: str) -> Any:
            if job_id == finished.id:
                read.set()
            return await get_job(job_id)

        go = stall_commits(monkeypatch, rt)
        monkeypatch.setattr(rt.store, "get_job", watched_get_job)
        answers: list[Any] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def create() -> None:
                    answers.append(await jobs.create("in flight"))

                async def complete_again() -> None:
                    try:
                        await jobs.complete(finished.id, 2)
                    except emit.Conflict as exc:
                        answers.append(exc)

                nursery.start_soon(create)
                await wait_all_tasks_blocked()  # its write is with the writer, stalled
                nursery.start_soon(complete_again)
                with trio.fail_after(1):
                    await read.wait()  # the store is read while that write is stalled
                go.set()
        # Both answered once the stalled write is durable, in either order.
        [refused] = [a for a in answers if isinstance(a, emit.Conflict)]
        [created] = [a for a in answers if not isinstance(a, emit.Conflict)]
        assert created.status == "pending" and "completed" in refused.message


async def test_a_job_ended_in_a_write_in_flight_is_answered_from_memory(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j")
        await jobs.poll(ack=True)

        async def no_read(job_id: str) -> Any:
            raise AssertionError("the store was read for a job memory knows")

        go = stall_commits(monkeypatch, rt)
        monkeypatch.setattr(rt.store, "get_job", no_read)
        outcomes: list[Any] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def kill() -> None:
                    outcomes.append(await jobs.kill(job.id))

                async def retry() -> None:
                    outcomes.append(await jobs.retry(job.id))

                nursery.start_soon(kill)
                await wait_all_tasks_blocked()  # killed, its write stalled
                nursery.start_soon(retry)
                await wait_all_tasks_blocked()
                go.set()
        assert sorted(view.status for view in outcomes) == ["killed", "pending"]


async def test_a_webhook_note_on_a_final_job_is_not_lost_to_a_read_while_it_is_in_flight(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    # A webhook try noted on a job only the store has changes that job in a write of
    # its own: until that write is durable the store's copy is behind, so a command
    # naming the job meanwhile (here a retry) must not read it from the store.
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j")
        await jobs.kill(job.id)  # durable: only the store has it now
        callback = Callback(
            "01CALLBACK0000000000000000", job.id, jobs.space_id, "https://example.com/h",
            None, "{}", 1, 0.0, "delivered", 0.0,
        )  # fmt: skip
        go = stall_commits(monkeypatch, rt)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def note() -> None:
                    await jobs._ask(
                        RecordCallback(job.id, EventType.CALLBACK_SENT, {"status": 200}, callback)
                    )

                nursery.start_soon(note)
                await wait_all_tasks_blocked()  # noted, its write stalled
                nursery.start_soon(jobs.retry, job.id)
                await wait_all_tasks_blocked()
                go.set()
        view = await jobs.get(job.id)
        assert view.events is not None
        assert [(e.seq, str(e.type)) for e in view.events] == [
            (1, "created"), (2, "killed"), (3, "callback_sent"), (4, "retried"),
        ]  # fmt: skip
