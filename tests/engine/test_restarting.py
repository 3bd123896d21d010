"""Restarts below the root: when the store writer actor crashes, everything after it
restarts (rest-for-one), and every space comes back by itself, with its timers: a
space nobody names again still makes its scheduled jobs due and expires its leases."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import actors
import emit
from emit.domain.space import LiveSpace
from emit.isotime import iso
from emit.space.actor import SpaceActor
from emit.store.base import Store
from emit.store.writer import StoreWriter

from .conftest import crash_when_told


async def test_every_space_runs_again_after_the_writer_actor_crashes(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    crash_when_told(monkeypatch, StoreWriter, "writer")
    async with emit.open_runtime(new_store()) as rt:
        touched = rt.space((await rt.create_space("touched")).id)
        untouched = rt.space((await rt.create_space("untouched")).id)
        scheduled = await untouched.create("later", scheduled_for=iso(rt.clock.now() + 60))
        leased = await untouched.create("leased", timeout_seconds=30)
        [delivery] = await untouched.poll(names="leased", ack=True)
        assert delivery.id == leased.id
        rt.writer.tell_nowait("crash")
        await trio.sleep(1)  # the restart (the root's backoff is a fraction of this)
        await touched.create("after")  # the one space a request names again
        await trio.sleep(120)  # past the schedule and the lease; nobody names the space
        store = rt.store
        due = await store.get_job(scheduled.id)
        expired = await store.get_job(leased.id)
        assert due is not None and due.status == "pending"
        assert expired is not None and expired.status != "running"
        assert expired.attempt_number == delivery.attempt_number + 1  # the timeout spent it
        assert set(rt.spaces.children()) == {touched.space_id, untouched.space_id}


async def test_every_space_runs_again_after_the_spaces_supervisor_gives_up(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    new_store: Callable[[], Store],
) -> None:
    """One space crashes and then cannot load: its restarts fail in a loop until the
    spaces supervisor gives up (its intensity is reachable). The root restarts the
    spaces, and every other space runs again by itself, with its timers."""
    failing: set[str] = set()
    started = SpaceActor.started

    async def failing_started(self: SpaceActor) -> None:
        if self.space_id in failing:
            raise RuntimeError("injected: this space cannot load")
        await started(self)

    monkeypatch.setattr(SpaceActor, "started", failing_started)
    crash_when_told(monkeypatch, SpaceActor, "space")
    async with emit.open_runtime(new_store()) as rt:
        bad = rt.space((await rt.create_space("bad")).id)
        untouched = rt.space((await rt.create_space("untouched")).id)
        scheduled = await untouched.create("later", scheduled_for=iso(rt.clock.now() + 120))
        ref = rt.spaces.whereis(bad.space_id)
        assert isinstance(ref, actors.ActorRef)
        failing.add(bad.space_id)
        ref.tell_nowait("crash")
        await trio.sleep(200)  # past the give-up (26.3 s), the root's restart and the schedule
        messages = [record.getMessage() for record in caplog.records]
        assert any("emit/spaces gives up" in message for message in messages)
        assert not any(message.startswith("emit gives up") for message in messages)
        due = await rt.store.get_job(scheduled.id)
        assert due is not None and due.status == "pending"  # nobody named the space
        failing.clear()
        assert (await bad.create("after")).status == "pending"  # loads on its next request


async def test_restarting_a_big_space_again_and_again_keeps_memory_flat(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    handle = LiveSpace._handle

    def crashing_handle(self: LiveSpace, message: Any, now: float, caller: Any) -> Any:
        if message == "crash":
            raise RuntimeError("injected space crash")
        return handle(self, message, now, caller)

    monkeypatch.setattr(LiveSpace, "_handle", crashing_handle)
    frozen: list[int] = []
    try:
        async with emit.open_runtime(new_store()) as rt:
            jobs = rt.space((await rt.create_space("big")).id)
            for _ in range(11):  # over 10,000 live jobs: the load freezes them
                await jobs.create_many([{"name": "j"}] * 1000)
            ref = rt.spaces.whereis(jobs.space_id)
            assert isinstance(ref, actors.ActorRef)
            for _ in range(5):
                ref.tell_nowait("crash")
                counts = await jobs.counts()  # answered by the next incarnation
                assert counts[emit.JobStatus.PENDING] == 11_000
                frozen.append(gc.get_freeze_count())
    finally:
        gc.unfreeze()  # the collector as it was, for the tests after this one
    # Each incarnation holds 11,000 jobs: had the crashed ones stayed frozen (the crash
    # holds them until the next one has loaded), each restart would add them all.
    assert frozen[-1] - frozen[1] < 1_000, frozen


async def test_a_space_that_crashes_is_a_warning_naming_it_and_the_cause(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    new_store: Callable[[], Store],
) -> None:
    crash_when_told(monkeypatch, SpaceActor, "space")
    caplog.set_level(logging.WARNING)
    async with emit.open_runtime(new_store()) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        await jobs.create("before")
        with trio.fail_after(10):
            ref = rt.spaces.whereis(space.id)
            assert ref is not None
            ref.tell_nowait("crash")  # type: ignore[union-attr]
            await trio.sleep(1)  # the restart (the backoff is a fraction of this)
            assert (await jobs.create("after")).status == "pending"
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert space.id in line and "restarting it" in line and "injected space crash" in line
