"""The runtime's metrics move with what the engine does: jobs created and finished, lease
expiries (on the autojump clock), webhook tries, store commits, open streams and actor
restarts; each runtime counts in a registry of its own, and a deleted space's series go."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families
from trio.testing import MockClock

import actors
import emit
from emit.callbacks.policy import CallbackPolicy
from emit.space.actor import SpaceActor
from emit.store.base import Store

from .conftest import crash_when_told


def samples(rt: emit.Runtime) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(rt.metrics_text().decode())
        for sample in family.samples
    }


def value(rt: emit.Runtime, name: str, **labels: str) -> float | None:
    return samples(rt).get((name, frozenset(labels.items())))


async def test_jobs_created_finished_and_counted_by_status(
    autojump_clock: MockClock, new_store: Callable[[], Store]
) -> None:
    with trio.fail_after(60):
        async with emit.open_runtime(new_store()) as rt:
            space = (await rt.create_space("s")).id
            jobs = rt.space(space)
            assert value(rt, "emit_jobs_created_total", space=space) == 0
            made = await jobs.create_many([{"name": "a"}, {"name": "b"}, {"name": "c"}])
            assert value(rt, "emit_jobs_created_total", space=space) == 3
            assert value(rt, "emit_jobs", space=space, status="pending") == 3
            await jobs.claim(made[0].id)
            await jobs.ack(made[0].id)
            await jobs.complete(made[0].id, {"ok": True})
            await jobs.kill(made[1].id)
            assert value(rt, "emit_jobs_finished_total", space=space, status="completed") == 1
            assert value(rt, "emit_jobs_finished_total", space=space, status="killed") == 1
            assert value(rt, "emit_jobs_finished_total", space=space, status="dead") == 0
            assert value(rt, "emit_jobs", space=space, status="completed") == 1
            assert value(rt, "emit_jobs", space=space, status="pending") == 1
            await jobs.retry(made[1].id)  # back from killed: no finish is taken back
            assert value(rt, "emit_jobs_finished_total", space=space, status="killed") == 1
            assert value(rt, "emit_jobs", space=space, status="killed") == 0
            commits = value(rt, "emit_store_commit_seconds_count")
            assert commits is not None and commits >= 6
            rows = value(rt, "emit_store_commit_rows_sum")
            assert rows is not None and rows >= 3 + 3  # three job rows, three events at least


async def test_lease_expiries_are_counted_by_kind(
    autojump_clock: MockClock, new_store: Callable[[], Store]
) -> None:
    with trio.fail_after(60):
        async with emit.open_runtime(new_store()) as rt:
            space = (await rt.create_space("s")).id
            jobs = rt.space(space)
            unacked = await jobs.create("unacked", timeout_seconds=5)
            running = await jobs.create("running", timeout_seconds=5, max_retries=0)
            await jobs.claim(unacked.id)
            await jobs.claim(running.id)
            await jobs.ack(running.id)
            await trio.sleep(6)  # both leases expire
            await jobs.settled()
            assert value(rt, "emit_lease_expiries_total", space=space, kind="ack") == 1
            assert value(rt, "emit_lease_expiries_total", space=space, kind="run") == 1
            assert value(rt, "emit_jobs_finished_total", space=space, status="dead") == 1
            assert value(rt, "emit_jobs", space=space, status="pending") == 1


async def test_webhook_tries_are_counted_by_outcome(
    autojump_clock: MockClock, new_store: Callable[[], Store]
) -> None:
    broken: list[httpx.Request] = []
    tried_twice = trio.Event()

    def receive(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ok":
            return httpx.Response(200)
        broken.append(request)
        if len(broken) == 2:
            tried_twice.set()
        return httpx.Response(500)

    policy = CallbackPolicy(tries=2, first_delay=1.0)
    with trio.fail_after(60):
        async with emit.open_runtime(
            new_store(),
            allow_private_callbacks=True,
            callback_policy=policy,
            callback_transport=httpx.MockTransport(receive),
        ) as rt:
            jobs = rt.space((await rt.create_space("s")).id)
            for path in ("/ok", "/broken"):
                job = await jobs.create("hooked", callback_url=f"https://hooks.test{path}")
                await jobs.claim(job.id)
                await jobs.ack(job.id)
                await jobs.complete(job.id)
            await tried_twice.wait()
            await trio.testing.wait_all_tasks_blocked()  # the sender settles the last try
            assert value(rt, "emit_callbacks_total", outcome="given_up") == 1
            assert value(rt, "emit_callbacks_total", outcome="delivered") == 1
            assert value(rt, "emit_callbacks_total", outcome="retrying") == 1


async def test_open_streams_are_counted_by_kind(
    autojump_clock: MockClock, new_store: Callable[[], Store]
) -> None:
    with trio.fail_after(60):
        async with emit.open_runtime(new_store()) as rt:
            jobs = rt.space((await rt.create_space("s")).id)
            job = await jobs.create("watched")
            assert value(rt, "emit_stream_subscribers", kind="space") == 0
            with jobs.stream(None, None), jobs.stream(None, None), jobs.job_stream(job.id, True):
                assert value(rt, "emit_stream_subscribers", kind="space") == 2
                assert value(rt, "emit_stream_subscribers", kind="job") == 1
            assert value(rt, "emit_stream_subscribers", kind="space") == 0
            assert value(rt, "emit_stream_subscribers", kind="job") == 0


async def test_a_restarted_space_is_counted_and_keeps_its_counts(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    crash_when_told(monkeypatch, SpaceActor, "space")
    with trio.fail_after(60):
        async with emit.open_runtime(new_store()) as rt:
            space = (await rt.create_space("s")).id
            jobs = rt.space(space)
            await jobs.create("before")
            ref = rt.spaces.whereis(space)
            assert isinstance(ref, actors.ActorRef)
            ref.tell_nowait("crash")
            await jobs.create("after")  # waits for the new incarnation
            assert value(rt, "emit_actor_restarts_total", actor=f"emit/spaces/{space}") == 1
            assert value(rt, "emit_jobs_created_total", space=space) == 2
            assert value(rt, "emit_jobs", space=space, status="pending") == 2


async def test_each_runtime_counts_apart_and_a_deleted_space_leaves_no_series(
    autojump_clock: MockClock,
) -> None:
    with trio.fail_after(60):
        async with emit.open_runtime(None) as one, emit.open_runtime(None) as two:
            space = (await one.create_space("s")).id
            await one.space(space).create("only in one")
            assert value(one, "emit_jobs_created_total", space=space) == 1
            assert value(two, "emit_jobs_created_total", space=space) is None
            await one.delete_space(space)
            assert not [key for key in samples(one) if ("space", space) in key[1]]


async def test_parked_long_polls_are_counted_by_space(
    autojump_clock: MockClock, new_store: Callable[[], Store]
) -> None:
    with trio.fail_after(60):
        async with emit.open_runtime(new_store()) as rt:
            space = (await rt.create_space("s")).id
            jobs = rt.space(space)
            assert value(rt, "emit_parked_polls", space=space) == 0
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(lambda: jobs.poll(wait=30))
                await trio.testing.wait_all_tasks_blocked()
                assert value(rt, "emit_parked_polls", space=space) == 2
                await jobs.create("j")  # one poll takes it
                await trio.testing.wait_all_tasks_blocked()
                assert value(rt, "emit_parked_polls", space=space) == 1
            assert value(rt, "emit_parked_polls", space=space) == 0  # the other timed out
