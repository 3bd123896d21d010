"""A space that stops with writes in flight (stopped for good, or crashed) never tells
the callers of a change that committed "restarting; retry": a retry without an
idempotency key would make it twice. Requests it had not taken are refused untouched."""

from __future__ import annotations

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

import actors
import emit
from emit.domain.commands import GiveBack
from emit.domain.model import Published
from emit.errors import Unavailable
from emit.store.records import Changes

Outcome = emit.JobView | Unavailable


async def _create(jobs: emit.SpaceJobs, name: str, into: dict[str, Outcome]) -> None:
    try:
        into[name] = await jobs.create(name)
    except Unavailable as exc:
        into[name] = exc


async def _stored_names(jobs: emit.SpaceJobs) -> set[str]:
    listed, _ = await jobs.list(limit=100)
    return {job.name for job in listed}


def _told_retry_but_saved(outcomes: dict[str, Outcome], stored: set[str]) -> list[str]:
    return [
        name
        for name, outcome in outcomes.items()
        if isinstance(outcome, Unavailable)
        and "may or may not" not in outcome.message
        and name in stored
    ]


async def test_a_space_stopped_under_load_tells_no_caller_of_a_saved_change_to_retry(
    rt: emit.Runtime,
) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    outcomes: dict[str, Outcome] = {}
    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(_create, jobs, f"j{n}", outcomes)
        nursery.start_soon(rt.spaces.stop_child, space.id)
    stored = await _stored_names(jobs)
    assert not _told_retry_but_saved(outcomes, stored)
    # Each caller told it was made finds it there.
    assert {name for name, o in outcomes.items() if not isinstance(o, Unavailable)} <= stored


async def test_a_write_in_flight_when_the_space_stops_is_answered_as_it_ended(
    rt: emit.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    gate = trio.Event()
    commit = rt.store.commit

    async def slow_commit(batches: list[Changes]) -> None:
        await gate.wait()
        await commit(batches)

    monkeypatch.setattr(rt.store, "commit", slow_commit)
    outcomes: dict[str, Outcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_create, jobs, "x", outcomes)
        await wait_all_tasks_blocked()  # the space handed the write to the writer
        nursery.start_soon(rt.spaces.stop_child, space.id)
        await wait_all_tasks_blocked()  # the space ends, its write still in flight
        gate.set()
    assert isinstance(outcomes["x"], emit.JobView)  # saved, and told so
    assert await _stored_names(jobs) == {"x"}


async def test_a_tell_to_an_ending_space_does_not_cut_short_its_writes_in_flight(
    rt: emit.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After-commit work fails for A (the space must end), B's write is in flight, and
    a give-back arrives: B's caller still hears that B was saved."""
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    await jobs.create("warm")
    publish = rt.hub.publish
    failed: list[bool] = []

    def failing_publish(space_id: str, events: list[Published]) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("injected after-commit bug")
        publish(space_id, events)

    monkeypatch.setattr(rt.hub, "publish", failing_publish)
    monkeypatch.setattr(rt.hub, "watched", lambda space_id: True)
    gates = [trio.Event(), trio.Event()]
    commit = rt.store.commit
    calls: list[int] = []

    async def gated(batches: list[Changes]) -> None:
        calls.append(1)
        await gates[min(len(calls), 2) - 1].wait()
        await commit(batches)

    monkeypatch.setattr(rt.store, "commit", gated)
    ref = rt.spaces.whereis(space.id)
    assert isinstance(ref, actors.ActorRef)
    outcomes: dict[str, Outcome] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_create, jobs, "A", outcomes)
        await wait_all_tasks_blocked()
        nursery.start_soon(_create, jobs, "B", outcomes)
        await wait_all_tasks_blocked()
        gates[0].set()  # A commits; its after-commit work fails: the space is ending
        await wait_all_tasks_blocked()
        ref.tell_nowait(GiveBack([("01ARZ3NDEKTSV4RRFFQ69G5FAV", "lease")]))
        await wait_all_tasks_blocked()
        gates[1].set()  # B commits
    monkeypatch.setattr(rt.store, "commit", commit)
    stored = await _stored_names(jobs)
    assert {"A", "B"} <= stored
    assert not _told_retry_but_saved(outcomes, stored), outcomes
