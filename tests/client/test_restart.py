"""A real server restarted under its clients: a running `Worker` (idle in a long poll,
or with a handler running) carries on and loses nothing and runs nothing twice; the
clients' safe calls made while it is down go through once it is back, and the unsafe
ones are not resent. And `AsyncClient` under asyncio. Real time, as every test of a
real server: the tests wait on events and answers, never on the clock (the only waits
are the clients' own backoffs, well under a second each)."""

import asyncio
import queue
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import emit
from emit import EventType, JobStatus

from .restartable import RestartableServer

RETRIES = 30
"""Enough for any restart here: the clients' backoff doubles from 0.25-0.5 s."""


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RestartableServer]:
    server = RestartableServer(nursery, tmp_path / "data")
    await server.start()
    yield server
    if server.runtime is not None:
        await server.stop()


class Observed(httpx.AsyncHTTPTransport):
    """httpx's transport, recording each request's method and path and whether the
    connection failed; `failed` is set on each failure (a fresh event after `rearm`)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, bool]] = []
        self.failed = trio.Event()

    def rearm(self) -> trio.Event:
        self.failed = trio.Event()
        return self.failed

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError:
            self.sent.append((request.method, request.url.path, False))
            self.failed.set()
            raise
        self.sent.append((request.method, request.url.path, True))
        return response


class ObservedSync(httpx.HTTPTransport):
    """`Observed` for the blocking client, run in a thread of the test's trio run."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, bool]] = []
        self.failed = trio.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self.sent.append((request.method, request.url.path, False))
            trio.from_thread.run_sync(self.failed.set)
            raise
        self.sent.append((request.method, request.url.path, True))
        return response


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a state of the server that no event announces (a parked poll)."""
    while not await condition():  # noqa: ASYNC110 (nothing to wait on but the state)
        await trio.sleep(0.01)


def started_events(job: emit.JobView) -> int:
    assert job.events is not None
    return sum(1 for event in job.events if event.type is EventType.STARTED)


class Handlers:
    """A worker's handlers that count their runs by job: ``quick`` (async) and
    ``threaded`` (a plain function) answer at once; ``blocked`` waits for `gate`, then
    reports progress and answers."""

    def __init__(self, worker: emit.Worker) -> None:
        self.runs: Counter[str] = Counter()
        self.entered = trio.Event()
        self.gate = trio.Event()
        worker.job("quick")(self.quick)
        worker.job("threaded")(self.threaded)
        worker.job("blocked")(self.blocked)

    async def quick(self, job: emit.Delivery, ctx: emit.AsyncContext) -> Any:
        self.runs[job.id] += 1
        return {"n": job.payload["n"]}

    def threaded(self, job: emit.Delivery, ctx: emit.Context) -> Any:
        self.runs[job.id] += 1
        return {"n": job.payload["n"]}

    async def blocked(self, job: emit.Delivery, ctx: emit.AsyncContext) -> Any:
        self.runs[job.id] += 1
        self.entered.set()
        await self.gate.wait()
        await ctx.progress(100, "released")
        return {"released": True}


async def run_jobs(producer: emit.AsyncClient, count: int, first: int = 0) -> list[str]:
    """``count`` jobs, quick and threaded in turn, each waited for until final."""
    ids = []
    for n in range(first, first + count):
        job = await producer.create("quick" if n % 2 else "threaded", {"n": n})
        ids.append(job.id)
    for job_id in ids:
        assert (await producer.wait(job_id)).status is JobStatus.COMPLETED
    return ids


async def assert_each_ran_once(
    producer: emit.AsyncClient, handlers: Handlers, ids: list[str]
) -> None:
    for job_id in ids:
        job = await producer.get(job_id)
        assert job.status is JobStatus.COMPLETED, job
        assert job.attempt_number == 0
        assert started_events(job) == 1
        assert handlers.runs[job_id] == 1
    assert sum(handlers.runs.values()) == len(ids)


@pytest.mark.parametrize("abrupt", [False, True], ids=["shutdown", "abrupt"])
async def test_a_worker_idle_in_a_long_poll_carries_on_after_a_restart(
    server: RestartableServer, abrupt: bool
) -> None:
    worker = emit.Worker(server.url, server.keys["worker"], server.space)
    handlers = Handlers(worker)
    transport = Observed()
    jobs = emit.AsyncClient(server.url, server.keys["worker"], server.space, transport=transport)
    with trio.fail_after(30):
        async with (
            emit.AsyncClient(
                server.url, server.keys["producer"], server.space, retries=RETRIES
            ) as producer,
            jobs,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(partial(worker.serve, concurrency=4, jobs=jobs))
            before = await run_jobs(producer, 4)

            async def parked() -> bool:
                assert server.runtime is not None
                return await server.runtime.space(server.space).pollers() == 1

            await until(parked)
            failed = transport.rearm()
            await server.stop(abrupt=abrupt)
            await failed.wait()  # the worker polled while the server was down
            url = server.url
            await server.start()
            assert server.url == url and server.starts == 2
            after = await run_jobs(producer, 4, first=4)
            await assert_each_ran_once(producer, handlers, before + after)
            worker.stop()
    polls = [ok for method, path, ok in transport.sent if path.endswith("/jobs/poll")]
    assert polls.count(False) >= 1


@pytest.mark.parametrize(
    ("abrupt", "release"),
    [(False, "down"), (False, "back"), (True, "down"), (True, "back")],
    ids=[
        "shutdown-released-while-down",
        "shutdown-released-after",
        "abrupt-released-while-down",
        "abrupt-released-after",
    ],
)
async def test_a_handler_running_across_a_restart_completes_once(
    server: RestartableServer, abrupt: bool, release: str
) -> None:
    worker = emit.Worker(server.url, server.keys["worker"], server.space)
    handlers = Handlers(worker)
    transport = Observed()
    jobs = emit.AsyncClient(server.url, server.keys["worker"], server.space, transport=transport)
    with trio.fail_after(30):
        async with (
            emit.AsyncClient(
                server.url, server.keys["producer"], server.space, retries=RETRIES
            ) as producer,
            jobs,
            trio.open_nursery() as nursery,
        ):
            # Released while down, the test watches the worker's requests; after, the
            # worker runs on the client it makes itself from its url, key and space.
            observed = jobs if release == "down" else None
            await nursery.start(partial(worker.serve, concurrency=4, jobs=observed))
            before = await run_jobs(producer, 2)
            blocked = await producer.create("blocked", {"n": -1})
            await handlers.entered.wait()
            waited: list[emit.JobView] = []
            waited_out = trio.Event()

            async def wait_across() -> None:  # follows the job's stream until it breaks
                waited.append(await producer.wait(blocked.id))
                waited_out.set()

            nursery.start_soon(wait_across)
            await server.stop(abrupt=abrupt)
            if release == "down":
                failed = transport.rearm()
                handlers.gate.set()
                while not any(
                    path.endswith("/progress") and not ok for _, path, ok in transport.sent
                ):
                    await failed.wait()  # its progress report failed: the server is down
                    failed = transport.rearm()
                await server.start()
            else:
                await server.start()
                handlers.gate.set()
            done = await producer.wait(blocked.id)
            assert done.status is JobStatus.COMPLETED
            assert done.result == {"released": True}
            assert done.progress == {"percent": 100, "message": "released", "subProgress": None}
            after = await run_jobs(producer, 2, first=2)
            await assert_each_ran_once(producer, handlers, [*before, blocked.id, *after])
            await waited_out.wait()
            assert [job.status for job in waited] == [JobStatus.COMPLETED]
            worker.stop()


async def test_a_completion_whose_answer_is_lost_is_resent_and_recorded_once(
    server: RestartableServer,
) -> None:
    """The server records a batch of completions, and the answer is lost (as when it
    goes down just after): the worker sends it again, the server answers 409 for each
    job it already has, and the worker drops them. Nothing runs or completes twice."""

    class LosesTheFirstCompletion(httpx.AsyncHTTPTransport):
        completes = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.url.path.endswith("/jobs/complete"):
                self.completes += 1
                if self.completes == 1:
                    await response.aread()
                    raise httpx.RemoteProtocolError("server disconnected", request=request)
            return response

    worker = emit.Worker(server.url, server.keys["worker"], server.space)
    handlers = Handlers(worker)
    transport = LosesTheFirstCompletion()
    jobs = emit.AsyncClient(server.url, server.keys["worker"], server.space, transport=transport)
    with trio.fail_after(30):
        async with (
            emit.AsyncClient(server.url, server.keys["producer"], server.space) as producer,
            jobs,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(partial(worker.serve, concurrency=4, jobs=jobs))
            ids = await run_jobs(producer, 3)
            await assert_each_ran_once(producer, handlers, ids)
            worker.stop()
    assert transport.completes >= 2


# ---------------------------------------------------------------- the clients


async def made_jobs(server: RestartableServer) -> int:
    assert server.runtime is not None
    _, total = await server.runtime.space(server.space).list(limit=1)
    return total


async def test_async_client_reads_made_while_the_server_is_down_go_through(
    server: RestartableServer,
) -> None:
    transport = Observed()
    with trio.fail_after(30):
        async with emit.AsyncClient(
            server.url,
            server.keys["producer"],
            server.space,
            retries=RETRIES,
            transport=transport,
        ) as client:
            job = await client.create("read-me")
            await server.stop()
            got: list[Any] = []
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    got.append(await client.get(job.id))
                    got.append(await client.list())

                nursery.start_soon(read)
                await transport.failed.wait()
                await server.start()
            assert got[0].id == job.id
            assert [j.id for j in got[1][0]] == [job.id]
    assert ("GET", f"/api/v1/jobs/{job.id}", False) in transport.sent


async def test_async_client_creates_are_resent_only_with_an_idempotency_key(
    server: RestartableServer,
) -> None:
    transport = Observed()
    with trio.fail_after(30):
        async with emit.AsyncClient(
            server.url,
            server.keys["producer"],
            server.space,
            retries=RETRIES,
            transport=transport,
        ) as client:
            await server.stop()
            with pytest.raises(httpx.ConnectError):
                await client.create("not-resent")
            assert [(m, ok) for m, _, ok in transport.sent] == [("POST", False)]
            created: list[emit.JobView] = []
            async with trio.open_nursery() as nursery:

                async def create() -> None:
                    created.append(await client.create("resent", idempotent=True))

                failed = transport.rearm()
                nursery.start_soon(create)
                await failed.wait()
                await server.start()
            assert created[0].idempotency_key is not None
            jobs, total = await client.list()
            assert total == 1 and [j.id for j in jobs] == [created[0].id]
            assert jobs[0].name == "resent"


async def test_a_create_whose_answer_is_lost_is_resent_and_makes_one_job(
    server: RestartableServer,
) -> None:
    """The first send reaches the server and makes the job; its answer is lost (the
    connection fails as the server goes down), the resend gets the same job."""

    class LosesTheFirstAnswer(httpx.AsyncHTTPTransport):
        lost = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.method == "POST" and not self.lost:
                self.lost += 1
                await response.aread()
                raise httpx.ReadError("the answer was lost", request=request)
            return response

    with trio.fail_after(30):
        async with emit.AsyncClient(
            server.url,
            server.keys["producer"],
            server.space,
            retries=RETRIES,
            transport=LosesTheFirstAnswer(),
        ) as client:
            job = await client.create("once", {"n": 1}, idempotent=True)
            jobs, total = await client.list()
            assert total == 1 and jobs[0].id == job.id


async def test_the_blocking_client_across_a_restart(server: RestartableServer) -> None:
    transport = ObservedSync()
    with (
        trio.fail_after(30),
        emit.Client(
            server.url,
            server.keys["producer"],
            server.space,
            retries=RETRIES,
            transport=transport,
        ) as client,
    ):
        job = await trio.to_thread.run_sync(client.create, "read-me")
        await server.stop()
        with pytest.raises(httpx.ConnectError):
            await trio.to_thread.run_sync(client.create, "not-resent")
        got: list[Any] = []
        async with trio.open_nursery() as nursery:

            def calls() -> None:
                got.append(client.get(job.id))
                got.append(client.list())
                got.append(client.create("resent", idempotent=True))

            nursery.start_soon(partial(trio.to_thread.run_sync, calls))
            await transport.failed.wait()
            await server.start()
        assert got[0].id == job.id
        assert got[1][1] == 1
        jobs, total = await trio.to_thread.run_sync(client.list)
        assert total == 2
        assert {j.name for j in jobs} == {"read-me", "resent"}
    posts = [ok for method, _, ok in transport.sent if method == "POST"]
    assert posts == [True, False, True]  # the create without a key was sent once


# ---------------------------------------------------------------- asyncio


def test_async_client_under_asyncio(tmp_path: Path) -> None:
    """The quick start through `AsyncClient` in an asyncio program, against a real
    server in a thread running its own trio loop."""
    ready: queue.Queue[tuple[RestartableServer, trio.lowlevel.TrioToken]] = queue.Queue()
    stop = trio.Event()

    async def serve() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                server = RestartableServer(nursery, tmp_path / "data")
                await server.start()
                ready.put((server, trio.lowlevel.current_trio_token()))
                await stop.wait()
                await server.stop()

    thread = threading.Thread(target=trio.run, args=(serve,))
    thread.start()
    server, token = ready.get(timeout=30)
    try:
        asyncio.run(asyncio.wait_for(quick_start(server), 20))
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(30)
    assert not thread.is_alive()


async def quick_start(server: RestartableServer) -> None:
    async with (
        emit.AsyncClient(server.url, server.keys["producer"], server.space) as producer,
        emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker,
    ):
        created = await producer.create("send-email", {"to": "a@example.com"})
        [delivery] = await worker.poll(5, names="send-email", wait=5, ack=True)
        assert delivery.id == created.id and delivery.payload == {"to": "a@example.com"}
        lease = delivery.lease_id
        await worker.progress(delivery.id, 50, "rendered", lease_id=lease)
        done = await worker.complete(delivery.id, {"sent": True}, lease_id=lease)
        assert done.status is JobStatus.COMPLETED
        job = await producer.get(created.id)
        assert job.result == {"sent": True}
        assert job.progress == {"percent": 50, "message": "rendered", "subProgress": None}
        assert started_events(job) == 1
        waited = await producer.wait(created.id, timeout=5)
        assert waited.status is JobStatus.COMPLETED
