"""emit.Worker against a real server on a loopback port: the quick start through the
runner, a handler kept alive past its job's timeout, a raising handler retried then
dead, and `emit worker` in a subprocess stopped by signals with jobs in flight. Real
time, waiting on answers, streams and the worker's own output, never on the clock."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import emit
from emit.http.settings import HttpSettings
from emit.testing import wait_for
from emit.worker import STOPPED, AsyncContext, Context

from ..http.conftest import ADMIN_KEY, Server, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


def producer(server: Server) -> emit.AsyncClient:
    return emit.AsyncClient(server.url, server.keys["producer"], server.space)


def runner(server: Server, **options: Any) -> emit.Worker:
    return emit.Worker(server.url, server.keys["worker"], server.space, **options)


class Counting(emit.AsyncClient):
    """The runner's client, counting keepalives and saying when ``enough`` were sent."""

    def __init__(self, *args: Any, enough: int) -> None:
        super().__init__(*args)
        self.keepalives = 0
        self.enough = enough
        self.kept = trio.Event()

    async def keepalive(
        self, job_id: str, *, seconds: int | None = None, lease_id: str | None = None
    ) -> emit.JobView:
        answer = await super().keepalive(job_id, seconds=seconds, lease_id=lease_id)
        self.keepalives += 1
        if self.keepalives >= self.enough:
            self.kept.set()
        return answer


async def test_the_quick_start_through_the_runner(server: Server) -> None:
    worker = runner(server)

    @worker.job("send-email")
    def send_email(job: emit.Delivery, ctx: Context) -> dict[str, Any]:
        ctx.progress(50, "rendered")
        ctx.log("sending", to=job.payload["to"])
        return {"sent": True, "to": job.payload["to"]}

    with trio.fail_after(30):
        async with producer(server) as jobs, trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: worker.serve(task_status=task_status))
            created = await jobs.create("send-email", {"to": "a@example.com"})
            done = await jobs.wait(created.id, timeout=20)
            worker.stop()
        lines = await server.rt.space(server.space).logs(created.id)
    assert (done.status, done.result) == (
        emit.JobStatus.COMPLETED,
        {"sent": True, "to": "a@example.com"},
    )
    assert done.progress == {"percent": 50, "message": "rendered", "subProgress": None}
    assert [e.type.value for e in done.events or ()] == [
        "created",
        "delivered",
        "started",
        "progress",
        "completed",
    ]
    assert [(line.message, line.fields) for line in lines] == [("sending", {"to": "a@example.com"})]


async def test_a_handler_longer_than_its_timeout_is_kept_alive(server: Server) -> None:
    worker = runner(server)
    client = Counting(server.url, server.keys["worker"], server.space, enough=4)

    @worker.job("slow")
    async def slow(job: emit.Delivery, ctx: AsyncContext) -> str:
        await client.kept.wait()  # four keepalives, half a second apart: past the 1 s timeout
        return "done"

    with trio.fail_after(30):
        async with producer(server) as jobs, client, trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: worker.serve(jobs=client, task_status=task_status)
            )
            created = await jobs.create("slow", timeout_seconds=1, max_retries=0)
            done = await jobs.wait(created.id, timeout=20)
            worker.stop()
    assert (done.status, done.result, done.attempt_number) == (emit.JobStatus.COMPLETED, "done", 0)
    assert done.started_at is not None and done.completed_at is not None
    assert done.completed_at - done.started_at > 1  # longer than the job's timeout
    assert "timeout" not in [e.type.value for e in done.events or ()]


async def test_a_raising_handler_is_retried_then_dead(server: Server) -> None:
    worker = runner(server)
    attempts: list[int] = []

    @worker.job("flaky")
    async def flaky(job: emit.Delivery, ctx: AsyncContext) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError(f"smtp down ({ctx.attempt})")

    with trio.fail_after(30):
        async with producer(server) as jobs, trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: worker.serve(task_status=task_status))
            created = await jobs.create("flaky", max_retries=1)
            dead = await jobs.wait(created.id, timeout=20)
            worker.stop()
    assert dead.status is emit.JobStatus.DEAD
    assert dead.result == {"error": "ConnectionError: smtp down (1)"}
    assert attempts == [0, 1]
    assert [e.type.value for e in dead.events or ()].count("retried") == 1


APP = """
import pathlib
import trio
import emit

worker = emit.Worker()

@worker.job("work")
async def work(job, ctx):
    await ctx.progress(10, "started")
    release = pathlib.Path(job.payload["release"])
    while not release.exists():  # the test says when to finish
        await trio.sleep(0.01)
    return {"finished": job.payload["n"]}
"""


class WorkerProcess:
    """``emit worker app:worker`` in a subprocess, its stderr read as it comes."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.output = ""

    async def until(self, text: str) -> None:
        """Read the worker's log until ``text`` is in it."""
        assert self.process.stderr is not None
        while text not in self.output:
            chunk = await self.process.stderr.receive_some()
            if not chunk:
                raise AssertionError(f"the worker ended before saying {text!r}:\n{self.output}")
            self.output += chunk.decode()

    async def rest(self) -> int:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.output += chunk.decode()
        return await self.process.wait()


async def start_worker(
    server: Server, tmp_path: Path, *flags: str, app: str = APP, target: str = "app:worker"
) -> WorkerProcess:
    (tmp_path / f"{target.partition(':')[0]}.py").write_text(textwrap.dedent(app))
    env = os.environ | {
        "EMIT_URL": server.url,
        "EMIT_WORKER_KEY": server.keys["worker"],
        "EMIT_SPACE_ID": server.space,
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "emit", "worker", target, *flags],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
    )
    running = WorkerProcess(process)
    await running.until("worker started")
    return running


async def started(server: Server, job_ids: list[str]) -> None:
    """Until each job has reported its progress (its handler is running)."""
    jobs = server.rt.space(server.space)
    for job_id in job_ids:
        with jobs.job_stream(job_id, full=True) as subscription:
            while (await jobs.get(job_id)).progress is None:
                await subscription.receive.receive()


async def test_a_signal_stops_polling_and_lets_running_handlers_finish(
    server: Server, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    with trio.fail_after(60):
        worker = await start_worker(server, tmp_path, "--concurrency", "3")
        try:
            async with producer(server) as jobs:
                created = await jobs.create_many(
                    [
                        {"name": "work", "payload": {"n": n, "release": str(release)}}
                        for n in range(3)
                    ]
                )
                await started(server, [job.id for job in created])
                worker.process.send_signal(signal.SIGTERM)
                await worker.until("SIGTERM: stopping")
                late = await jobs.create("work", {"n": 9, "release": str(release)})
                release.touch()
                status = await worker.rest()
                finished = [await jobs.get(job.id) for job in created]
                waiting = await jobs.get(late.id)
        finally:
            with trio.CancelScope(shield=True):
                worker.process.kill()
                await worker.process.wait()
    assert status == 0, worker.output
    assert [(job.status, job.result, job.attempt_number) for job in finished] == [
        (emit.JobStatus.COMPLETED, {"finished": n}, 0) for n in range(3)
    ]
    for job in finished:  # each ran once: one delivery, one start
        assert [e.type.value for e in job.events or ()].count("started") == 1
    assert (waiting.status, waiting.delivered_at) == (emit.JobStatus.PENDING, None)
    assert "worker stopped" in worker.output


async def test_a_second_signal_stops_at_once_and_the_jobs_are_retried(
    server: Server, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    with trio.fail_after(60):
        worker = await start_worker(server, tmp_path, "--concurrency", "2", "--grace", "600")
        try:
            async with producer(server) as jobs:
                created = await jobs.create_many(
                    [
                        {"name": "work", "payload": {"n": n, "release": str(release)}}
                        for n in range(2)
                    ]
                )
                await started(server, [job.id for job in created])
                worker.process.send_signal(signal.SIGINT)
                await worker.until("SIGINT: stopping")
                worker.process.send_signal(signal.SIGINT)
                status = await worker.rest()  # at once: not the 600 s grace
                retried = [await jobs.get(job.id) for job in created]
                # nothing lost: another worker finishes them
                release.touch()
                again = await start_worker(server, tmp_path)
                try:
                    finished = [await jobs.wait(job.id, timeout=30) for job in created]
                finally:
                    again.process.send_signal(signal.SIGTERM)
                    assert await again.rest() == 0
        finally:
            with trio.CancelScope(shield=True):
                worker.process.kill()
                await worker.process.wait()
    assert status == 0, worker.output
    assert "stopping at once" in worker.output
    assert [(job.status, job.attempt_number) for job in retried] == [
        (emit.JobStatus.PENDING, 1)
    ] * 2
    for job in retried:
        [event] = [e for e in job.events or () if e.type.value == "retried"]
        assert isinstance(event.data, dict) and event.data["error"] == STOPPED
    assert [(job.status, job.attempt_number) for job in finished] == [
        (emit.JobStatus.COMPLETED, 1)
    ] * 2


async def test_the_readme_runner_runs_the_readme_job(server: Server, tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [app] = re.findall(r"```python\n# jobs.py\n(.*?)```", readme, re.DOTALL)
    with trio.fail_after(60):
        worker = await start_worker(server, tmp_path, app=app, target="jobs:worker")
        try:
            async with producer(server) as jobs:
                created = await jobs.create("send-email", {"to": "a@b.c"})
                done = await jobs.wait(created.id, timeout=30)
            worker.process.send_signal(signal.SIGINT)
            assert await worker.rest() == 0
        finally:
            with trio.CancelScope(shield=True):
                worker.process.kill()
                await worker.process.wait()
    assert (done.status, done.result) == (emit.JobStatus.COMPLETED, {"sent": "a@b.c"})
    assert done.progress == {"percent": 50, "message": "sending", "subProgress": None}


def test_emit_worker_refuses_what_is_not_a_worker(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("worker = 3\n")
    cases = {
        "app": "'app' is not MODULE:WORKER (as myapp.jobs:worker)",
        "nowhere:worker": "cannot import nowhere: No module named 'nowhere'",
        "app:missing": "app has no missing",
        "app:worker": "app:worker is a int, not an emit.Worker",
    }
    for target, message in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "emit", "worker", target],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stderr.strip()) == (2, f"emit: {message}"), target


async def test_emit_worker_says_why_a_server_refuses_it(server: Server, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    env = os.environ | {
        "EMIT_URL": server.url,
        "EMIT_WORKER_KEY": server.keys["producer"],  # no jobs:poll
        "EMIT_SPACE_ID": server.space,
    }
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "emit", "worker", "app:worker"],
            cwd=tmp_path,
            env=env,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1].endswith("(403 forbidden)")


async def test_plain_handlers_run_as_many_at_once_as_the_concurrency() -> None:
    """50 plain handlers at once (trio's default thread limit is 40): each waits at a
    barrier that opens only when all 50 are there."""
    worker = emit.Worker()
    barrier = threading.Barrier(50)

    @worker.job("together")
    def together(job: emit.Delivery, ctx: Context) -> int:
        return barrier.wait(timeout=30)

    with trio.fail_after(60):
        async with emit.open_runtime(None) as rt:
            space = await rt.create_space("threads")
            jobs = rt.space(space.id)
            created = await jobs.create_many([{"name": "together", "maxRetries": 0}] * 50)
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: worker.serve(
                        concurrency=50, jobs=jobs, task_status=task_status
                    )
                )
                done = [await wait_for(jobs, job.id) for job in created]
                worker.stop()
    assert [job.status for job in done] == [emit.JobStatus.COMPLETED] * 50
