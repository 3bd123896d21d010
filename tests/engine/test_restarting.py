"""Restarts below the root: when the store writer actor crashes, everything after it
restarts (rest-for-one), and every space comes back by itself, with its timers: a
space nobody names again still makes its scheduled jobs due and expires its leases."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock

import emit
from emit.clock import iso
from emit.store.writer import StoreWriter


async def test_every_space_runs_again_after_the_writer_actor_crashes(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    receive = StoreWriter.receive

    async def crashing_receive(self: StoreWriter, message: Any) -> object:
        if message == "crash":
            raise RuntimeError("injected writer crash")
        return await receive(self, message)

    monkeypatch.setattr(StoreWriter, "receive", crashing_receive)
    async with emit.open_runtime(None) as rt:
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
