"""Testing code that uses emit the way emit tests itself: an in-memory runtime on trio's
`MockClock`, and a registered `Worker`'s handlers run in-process against it, so a test
drives a job through timeouts, retries and death deterministically, with no server and
no real sleeps (see docs/testing.md, "Testing your own code").

As a pytest plugin (``pytest_plugins = ["emit.testing"]`` in ``conftest.py``) it gives
the fixtures ``emit_runtime`` (the runtime), ``emit_space`` (a space on it) and
``emit_jobs`` (that space's `SpaceJobs`: the same methods and keywords as `emit.Client`,
so code that takes a client takes it too). Tests using them take pytest-trio's
``autojump_clock`` as well: trio hands a test the clock among its own arguments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import outcome
import pytest
import trio
import trio.lowlevel
import trio.testing

from .domain.model import JobStatus
from .domain.records import Space
from .domain.views import JobView
from .runtime import Runtime, SpaceJobs, open_runtime
from .worker import Worker, WorkerJobs

T = TypeVar("T")

FINAL = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.KILLED})


async def _in_thread(function: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(function, abandon_on_cancel=True)


async def run_in_thread_holding_clock(function: Callable[[], T]) -> T:
    """Run a plain handler in a thread while the clock stands still: the autojump clock
    jumps whenever every task waits, and a task waiting on a thread waits. Keeping one
    task busy until the thread returns means a job's deadlines pass only while handlers
    wait on the clock themselves, exactly as in production."""
    done = False

    async def hold() -> None:
        while not done:
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        try:  # captured, so the handler's exception is not wrapped in the nursery's group
            result = await outcome.acapture(_in_thread, function)
        finally:
            done = True
    return result.unwrap()


@asynccontextmanager
async def running(
    worker: Worker, jobs: WorkerJobs, *, concurrency: int = 4
) -> AsyncIterator[Worker]:
    """Run ``worker``'s handlers against ``jobs`` for the block (plain handlers in
    threads, holding the clock); stop it at the end, letting running handlers finish
    within the worker's grace period."""
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: worker.serve(
                concurrency=concurrency,
                jobs=jobs,
                run_sync=run_in_thread_holding_clock,
                task_status=task_status,
            )
        )
        try:
            yield worker
        finally:
            worker.stop()


async def wait_for(jobs: SpaceJobs, job_id: str, statuses: frozenset[JobStatus] = FINAL) -> JobView:
    """The job, once its status is one of ``statuses`` (default: final), with its
    events: waits on the job's stream, not on time."""
    with jobs.job_stream(job_id, full=True) as subscription:
        while True:
            job = await jobs.get(job_id)
            if job.status in statuses:
                return job
            await subscription.receive.receive()


def _require_mock_clock() -> None:
    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        raise RuntimeError(
            "emit's test fixtures run on trio's MockClock: add autojump_clock to the "
            "test's arguments"
        )


@pytest.fixture
async def emit_runtime() -> AsyncIterator[Runtime]:
    """An in-memory runtime (no files) on the test's MockClock."""
    _require_mock_clock()
    async with open_runtime(None) as runtime:
        yield runtime


@pytest.fixture
async def emit_space(emit_runtime: Runtime) -> Space:
    """A space named ``test`` on ``emit_runtime``."""
    return await emit_runtime.create_space("test")


@pytest.fixture
def emit_jobs(emit_runtime: Runtime, emit_space: Space) -> SpaceJobs:
    """The jobs of ``emit_space``: producer and worker calls alike."""
    return emit_runtime.space(emit_space.id)


__all__ = [
    "FINAL",
    "emit_jobs",
    "emit_runtime",
    "emit_space",
    "run_in_thread_holding_clock",
    "running",
    "wait_for",
]
