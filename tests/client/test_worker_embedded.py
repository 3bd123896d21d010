"""The worker runner against an in-memory runtime on the autojump clock: keepalives,
lost leases, retries, checkpoints, batching, concurrency, stopping and passing
failures, exactly and without real time. The same runner against a real server is
tests/client/test_worker.py."""

import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import emit
from emit.runtime import Runtime, SpaceJobs
from emit.testing import run_in_thread_holding_clock, running, wait_for
from emit.worker import STOPPED, AsyncContext, Context, LeaseLost


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    async with emit.open_runtime(None) as rt:
        yield rt


@pytest.fixture
async def jobs(runtime: Runtime) -> SpaceJobs:
    space = await runtime.create_space("work")
    return runtime.space(space.id)


class Recording:
    """`SpaceJobs` as the runner sees it, recording its calls and failing the first
    ``fail_polls`` polls and ``fail_completes`` completes as a restarting server would."""

    def __init__(
        self,
        jobs: SpaceJobs,
        *,
        fail_polls: int = 0,
        fail_completes: int = 0,
        failure: Callable[[], emit.EmitError] = lambda: emit.Unavailable("restarting"),
    ):
        self.jobs = jobs
        self.fail_polls = fail_polls
        self.fail_completes = fail_completes
        self.failure = failure
        self.calls: list[tuple[str, int]] = []

    async def poll(
        self,
        count: int = 1,
        *,
        names: str | Sequence[str] | None = None,
        wait: float = 0,
        ack: bool = False,
    ) -> list[emit.Delivery]:
        self.calls.append(("poll", count))
        if self.fail_polls:
            self.fail_polls -= 1
            raise self.failure()
        return await self.jobs.poll(count, names=names, wait=wait, ack=ack)

    async def keepalive(
        self, job_id: str, *, seconds: int | None = None, lease_id: str | None = None
    ) -> Any:
        self.calls.append(("keepalive", 1))
        return await self.jobs.keepalive(job_id, seconds=seconds, lease_id=lease_id)

    async def progress(
        self,
        job_id: str,
        percent: float,
        message: str,
        *,
        sub_progress: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> Any:
        return await self.jobs.progress(
            job_id, percent, message, sub_progress=sub_progress, lease_id=lease_id
        )

    async def checkpoint(
        self, job_id: str, state: Mapping[str, Any], *, lease_id: str | None = None
    ) -> Any:
        return await self.jobs.checkpoint(job_id, state, lease_id=lease_id)

    async def event(
        self, job_id: str, type: str, data: Any = None, *, lease_id: str | None = None
    ) -> Any:
        return await self.jobs.event(job_id, type, data, lease_id=lease_id)

    async def log(
        self,
        job_id: str,
        level: str,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> int:
        return await self.jobs.log(job_id, level, message, fields=fields, lease_id=lease_id)

    async def complete_many(self, items: Sequence[Mapping[str, Any]]) -> Sequence[Any]:
        self.calls.append(("complete", len(items)))
        if self.fail_completes:
            self.fail_completes -= 1
            raise self.failure()
        if any(item.get("result") == "too large" for item in items):
            raise emit.PayloadTooLarge("the body is over the limit")
        return await self.jobs.complete_many(items)

    async def fail_many(self, items: Sequence[Mapping[str, Any]]) -> Sequence[Any]:
        self.calls.append(("fail", len(items)))
        return await self.jobs.fail_many(items)

    def count(self, call: str) -> int:
        return sum(1 for name, _ in self.calls if name == call)


class Gate:
    """Handlers wait here until the test opens it; ``full`` is set once ``n`` wait."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.waiting = 0
        self.full = trio.Event()
        self.opened = trio.Event()

    async def wait(self) -> None:
        self.waiting += 1
        if self.waiting == self.n:
            self.full.set()
        await self.opened.wait()


async def test_plain_and_async_handlers_complete_with_their_results(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()

    @worker.job("send-email")
    def send_email(job: emit.Delivery, ctx: Context) -> dict[str, Any]:
        ctx.progress(50, "rendered")
        ctx.log("sending", to=job.payload["to"])
        ctx.event("sent", {"to": job.payload["to"]})
        return {"sent": True, "attempt": ctx.attempt}

    @worker.job("resize")
    async def resize(job: emit.Delivery, ctx: AsyncContext) -> int:
        await ctx.progress(10, "started", sub_progress={"load": {"percent": 100}})
        return int(job.payload) * 2

    with trio.fail_after(60):
        email = await jobs.create("send-email", {"to": "a@example.com"})
        image = await jobs.create("resize", 21)
        async with running(worker, jobs):
            done = await wait_for(jobs, email.id)
            resized = await wait_for(jobs, image.id)
    assert done.status is emit.JobStatus.COMPLETED
    assert done.result == {"sent": True, "attempt": 0}
    assert [e.type.value for e in done.events or ()] == [
        "created",
        "delivered",
        "started",
        "progress",
        "event",
        "completed",
    ]
    assert done.events is not None and "sent" in str(done.events[4].data)
    assert resized.result == 42
    assert resized.progress == {
        "percent": 10,
        "message": "started",
        "subProgress": {"load": {"percent": 100}},
    }
    [line] = await jobs.logs(email.id)
    assert (line.message, line.fields) == ("sending", {"to": "a@example.com"})


async def test_a_handler_longer_than_its_timeout_is_kept_alive(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs)

    @worker.job("slow")
    async def slow(job: emit.Delivery, ctx: AsyncContext) -> str:
        await trio.sleep(100)  # ten times the job's timeout
        return "done"

    with trio.fail_after(600):
        job = await jobs.create("slow", timeout_seconds=10)
        async with running(worker, recording):
            done = await wait_for(jobs, job.id)
    assert (done.status, done.result, done.attempt_number) == (emit.JobStatus.COMPLETED, "done", 0)
    assert "timeout" not in str(done.events)
    assert recording.count("keepalive") >= 100 // 10 * 3 - 1  # a third of the timeout apart


async def test_progress_restarts_the_keepalive_clock(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs)

    @worker.job("busy")
    async def busy(job: emit.Delivery, ctx: AsyncContext) -> None:
        for step in range(20):
            await trio.sleep(2)
            await ctx.progress(step * 5, f"step {step}")

    with trio.fail_after(600):
        job = await jobs.create("busy", timeout_seconds=9)
        async with running(worker, recording):
            done = await wait_for(jobs, job.id)
    assert done.status is emit.JobStatus.COMPLETED
    assert recording.count("keepalive") == 0  # progress every 2 s keeps a 9 s job alive


async def test_a_lost_lease_cancels_an_async_handler_and_reports_nothing(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs)
    started, ended = trio.Event(), trio.Event()
    cancelled: list[bool] = []

    @worker.job("long")
    async def long(job: emit.Delivery, ctx: AsyncContext) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(ctx.cancelled)
            ended.set()

    with trio.fail_after(600):
        job = await jobs.create("long", timeout_seconds=30)
        async with running(worker, recording):
            await started.wait()
            await jobs.kill(job.id, "no longer wanted")
            killed = await wait_for(jobs, job.id)
            await ended.wait()
    assert killed.status is emit.JobStatus.KILLED
    assert cancelled == [True]
    assert recording.count("complete") == recording.count("fail") == 0


async def test_a_plain_handler_learns_of_a_lost_lease_from_its_calls(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    started, ended = trio.Event(), trio.Event()
    go = threading.Event()
    seen: list[Any] = []

    @worker.job("plain")
    def plain(job: emit.Delivery, ctx: Context) -> str:
        ctx.progress(1, "started")
        trio.from_thread.run_sync(started.set)
        go.wait()
        try:
            ctx.progress(50, "half")
        except LeaseLost as lost:
            seen.append((ctx.cancelled, str(lost)))
            raise
        finally:
            trio.from_thread.run_sync(ended.set)
        return "never"

    with trio.fail_after(600):
        job = await jobs.create("plain")
        async with running(worker, jobs):
            await started.wait()
            await jobs.kill(job.id)
            go.set()
            await ended.wait()
    [(cancelled, reason)] = seen
    assert cancelled and "killed" in reason
    assert (await jobs.get(job.id)).status is emit.JobStatus.KILLED


async def test_a_raising_handler_is_retried_then_dead_with_its_error_and_traceback(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    attempts: list[int] = []

    @worker.job("flaky")
    def flaky(job: emit.Delivery, ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ValueError(f"boom {ctx.attempt}")

    with trio.fail_after(600):
        job = await jobs.create("flaky", max_retries=2)
        async with running(worker, jobs):
            dead = await wait_for(jobs, job.id)
    assert dead.status is emit.JobStatus.DEAD
    assert dead.result == {"error": "ValueError: boom 2"}
    assert attempts == [0, 1, 2]
    assert [e.type.value for e in dead.events or ()].count("retried") == 2
    lines = await jobs.logs(job.id)
    assert [line.level.name for line in lines] == ["ERROR"] * 3
    assert "Traceback" in lines[0].message and "ValueError: boom 0" in lines[0].message


async def test_a_later_attempt_gets_the_previous_checkpoint(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    seen: list[Any] = []

    @worker.job("resumable")
    async def resumable(job: emit.Delivery, ctx: AsyncContext) -> str:
        seen.append((ctx.attempt, ctx.previous_checkpoint, job.checkpoint))
        if ctx.attempt == 0:
            await ctx.checkpoint({"done": 3})
            raise RuntimeError("interrupted")
        return f"resumed at {ctx.previous_checkpoint['done']}"

    with trio.fail_after(600):
        job = await jobs.create("resumable", max_retries=1)
        async with running(worker, jobs):
            done = await wait_for(jobs, job.id)
    assert done.result == "resumed at 3"
    assert seen == [(0, None, None), (1, {"done": 3}, {"done": 3})]


async def test_outcomes_finishing_together_go_in_one_request(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs)
    gate = Gate(16)

    @worker.job("batch")
    async def batch(job: emit.Delivery, ctx: AsyncContext) -> Any:
        await gate.wait()
        if job.payload % 2:
            raise ValueError("odd")
        return job.payload

    with trio.fail_after(600):
        created = await jobs.create_many(
            [{"name": "batch", "payload": n, "maxRetries": 0} for n in range(16)]
        )
        async with running(worker, recording, concurrency=16):
            await gate.full.wait()
            gate.opened.set()
            for job in created:
                await wait_for(jobs, job.id)
    assert [c for c in recording.calls if c[0] in ("complete", "fail")] == [
        ("complete", 8),
        ("fail", 8),
    ]
    assert next(count for name, count in recording.calls if name == "poll") == 16


async def test_no_more_handlers_run_at_once_than_the_concurrency(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    now = peak = 0

    @worker.job("count")
    async def count(job: emit.Delivery, ctx: AsyncContext) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await trio.sleep(1)
        now -= 1

    with trio.fail_after(600):
        created = await jobs.create_many([{"name": "count"}] * 9)
        async with running(worker, jobs, concurrency=3):
            for job in created:
                await wait_for(jobs, job.id)
    assert peak == 3


async def test_a_result_that_is_not_json_fails_the_attempt(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()

    @worker.job("odd")
    def odd(job: emit.Delivery, ctx: Context) -> Any:
        return {1, 2}

    with trio.fail_after(600):
        job = await jobs.create("odd", max_retries=0)
        async with running(worker, jobs):
            dead = await wait_for(jobs, job.id)
    assert dead.status is emit.JobStatus.DEAD
    assert "not JSON" in str(dead.result)


async def test_a_stop_lets_running_handlers_finish(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker(grace=60)
    four = trio.Event()
    runs: dict[str, int] = {}

    @worker.job("work")
    async def work(job: emit.Delivery, ctx: AsyncContext) -> str:
        if len(runs) == 3:
            four.set()
        runs[job.id] = runs.get(job.id, 0) + 1
        await trio.sleep(30)  # within the grace period
        return "finished"

    with trio.fail_after(600):
        created = await jobs.create_many([{"name": "work"}] * 6)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: worker.serve(concurrency=4, jobs=jobs, task_status=task_status)
            )
            await four.wait()
            worker.stop()
        # serve returned: the four running finished; the two waiting were never taken
        states = [await jobs.get(job.id) for job in created]
    assert sorted(job.status.value for job in states) == ["completed"] * 4 + ["pending"] * 2
    assert all(count == 1 for count in runs.values()) and len(runs) == 4
    assert all(job.attempt_number == 0 for job in states)


async def test_handlers_past_the_grace_period_are_failed_to_be_retried(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker(grace=5)
    started = trio.Event()
    ended: list[bool] = []

    @worker.job("stuck")
    async def stuck(job: emit.Delivery, ctx: AsyncContext) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            ended.append(ctx.cancelled)

    with trio.fail_after(600):
        job = await jobs.create("stuck")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: worker.serve(jobs=jobs, task_status=task_status)
            )
            await started.wait()
            stopped_at = trio.current_time()
            worker.stop()
        assert trio.current_time() - stopped_at == pytest.approx(5)
        retried = await jobs.get(job.id)
    assert ended == [True]
    assert (retried.status, retried.attempt_number) == (emit.JobStatus.PENDING, 1)
    [event] = [e.data for e in retried.events or () if e.type.value == "retried"]
    assert isinstance(event, dict) and event["error"] == STOPPED


async def test_a_stop_now_fails_running_jobs_at_once(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker(grace=60)
    started = trio.Event()

    @worker.job("stuck")
    async def stuck(job: emit.Delivery, ctx: AsyncContext) -> None:
        started.set()
        await trio.sleep_forever()

    with trio.fail_after(600):
        job = await jobs.create("stuck")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: worker.serve(jobs=jobs, task_status=task_status)
            )
            await started.wait()
            stopped_at = trio.current_time()
            worker.stop()
            await trio.sleep(1)
            worker.stop(now=True)
        assert trio.current_time() - stopped_at == pytest.approx(1)
    assert (await jobs.get(job.id)).attempt_number == 1


async def test_passing_failures_back_off_and_resume_without_losing_an_outcome(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs, fail_polls=3, fail_completes=2)
    runs = 0

    @worker.job("once")
    async def once(job: emit.Delivery, ctx: AsyncContext) -> str:
        nonlocal runs
        runs += 1
        return "ok"

    with trio.fail_after(600):
        job = await jobs.create("once")
        async with running(worker, recording):
            done = await wait_for(jobs, job.id)
    assert (done.status, done.result, runs) == (emit.JobStatus.COMPLETED, "ok", 1)
    assert recording.count("poll") >= 4 and recording.count("complete") == 3


def bad_gateway() -> emit.EmitError:
    error = emit.EmitError("HTTP 502: bad gateway")  # a proxy's, while emit restarts
    error.status = 502
    return error


async def test_a_proxys_5xx_passes_like_a_restart(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs, fail_polls=2, fail_completes=2, failure=bad_gateway)

    @worker.job("once")
    async def once(job: emit.Delivery, ctx: AsyncContext) -> str:
        return "ok"

    with trio.fail_after(600):
        job = await jobs.create("once")
        async with running(worker, recording):
            done = await wait_for(jobs, job.id)
    assert (done.status, done.result, done.attempt_number) == (emit.JobStatus.COMPLETED, "ok", 0)
    assert recording.count("complete") == 3


async def test_a_batch_refused_whole_is_sent_item_by_item(
    jobs: SpaceJobs, autojump_clock: trio.testing.MockClock
) -> None:
    worker = emit.Worker()
    recording = Recording(jobs)
    gate = Gate(2)

    @worker.job("report")
    async def report(job: emit.Delivery, ctx: AsyncContext) -> str:
        await gate.wait()
        return str(job.payload)

    with trio.fail_after(600):
        big, small = await jobs.create_many(
            [{"name": "report", "payload": "too large", "maxRetries": 0},
             {"name": "report", "payload": "fine"}]
        )  # fmt: skip
        async with running(worker, recording):
            await gate.full.wait()
            gate.opened.set()
            refused = await wait_for(jobs, big.id)
            done = await wait_for(jobs, small.id)
    assert (done.status, done.result) == (emit.JobStatus.COMPLETED, "fine")
    assert refused.status is emit.JobStatus.DEAD
    assert refused.result == {
        "error": "the result was refused: PayloadTooLarge: the body is over the limit"
    }
    reports = [c for c in recording.calls if c[0] != "poll"]
    assert reports[0] == ("complete", 2)  # together, refused whole; then each alone
    assert sorted(reports[1:]) == [("complete", 1), ("complete", 1), ("fail", 1)]


async def test_a_worker_needs_handlers_and_one_per_name() -> None:
    worker = emit.Worker()
    with pytest.raises(ValueError, match="no handlers"):
        await worker.serve(jobs=None)
    worker.job("a")(lambda job, ctx: None)
    with pytest.raises(ValueError, match="already have a handler"):
        worker.job("a")(lambda job, ctx: None)
    with pytest.raises(ValueError, match="1 to 200"):
        worker.job("")


async def test_the_clock_holds_while_a_plain_handler_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = trio.current_time()
    answer = await run_in_thread_holding_clock(lambda: sum(range(100_000)))
    assert answer == sum(range(100_000)) and trio.current_time() == before
