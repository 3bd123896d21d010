"""A command on a job that left memory (a stale complete, a retry of a dead job) reads
the job from the store without waiting for the writes in flight: the space keeps
applying other commands meanwhile, and a job that ended in a write still in flight is
answered from memory."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import emit
from emit.store.records import Changes


async def test_a_stale_complete_reads_the_store_while_a_write_is_in_flight(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with emit.open_runtime(None) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        finished = await jobs.create("finished")
        await jobs.poll(ack=True)
        await jobs.complete(finished.id, 1)  # durable: only the store has it now
        store = rt.store
        commit, get_job = store.commit, store.get_job
        go, read = trio.Event(), trio.Event()

        async def stalled_commit(changes: list[Changes]) -> None:
            await go.wait()
            await commit(changes)

        async def watched_get_job(job_id: str) -> Any:
            if job_id == finished.id:
                read.set()
            return await get_job(job_id)

        monkeypatch.setattr(store, "commit", stalled_commit)
        monkeypatch.setattr(store, "get_job", watched_get_job)
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
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with emit.open_runtime(None) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j")
        await jobs.poll(ack=True)
        store = rt.store
        commit = store.commit
        go = trio.Event()

        async def stalled_commit(changes: list[Changes]) -> None:
            await go.wait()
            await commit(changes)

        async def no_read(job_id: str) -> Any:
            raise AssertionError("the store was read for a job memory knows")

        monkeypatch.setattr(store, "commit", stalled_commit)
        monkeypatch.setattr(store, "get_job", no_read)
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
