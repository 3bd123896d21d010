"""After-commit work (stream publishing, webhook hints, push wakes, answers) is the
space's own: the store writer only reports that a write committed or failed. A space
whose after-commit code raises restarts alone; the writer and other spaces carry on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import emit
from emit.domain.commands import KillJob
from emit.domain.model import Published
from emit.domain.space import LiveSpace
from emit.space import actor as space_actor
from emit.store import records
from emit.store.base import Store

from .conftest import stall_commits


async def test_a_failing_publish_restarts_its_space_only(
    autojump_clock: MockClock,
    caplog: pytest.LogCaptureFixture,
    new_store: Callable[[], Store],
) -> None:
    caplog.set_level(logging.WARNING, logger="actors")
    async with emit.open_runtime(new_store()) as rt:
        bad = rt.space((await rt.create_space("bad")).id)
        good = rt.space((await rt.create_space("good")).id)
        kept = await good.create("kept")
        hub = rt.hub
        publish, watched = hub.publish, hub.watched
        failures: list[str] = []

        def failing_publish(space_id: str, events: list[Published]) -> None:
            if space_id == bad.space_id and not failures:
                failures.append(space_id)
                raise RuntimeError("a bug in after-commit code")
            publish(space_id, events)

        hub.publish = failing_publish  # type: ignore[method-assign]
        hub.watched = lambda space_id: space_id == bad.space_id or watched(space_id)  # type: ignore[method-assign]
        with trio.fail_after(10):
            # Committed, so answered: the failure after the commit is not the caller's.
            created = await bad.create("x")
            assert failures == [bad.space_id]
            assert (await bad.get(created.id)).status == "pending"
            # The space came back by itself, from the store; the other one never left.
            again = await bad.create("y")
            assert [d.id for d in await bad.poll(count=2)] == [created.id, again.id]
            assert [d.id for d in await good.poll()] == [kept.id]
        crashed = [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]
        assert not [line for line in crashed if "emit/store" in line]
        assert [line for line in crashed if bad.space_id in line]


async def test_a_bug_waits_for_the_writes_in_flight_then_the_space_reloads(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    handle = LiveSpace._handle

    def buggy_handle(self: LiveSpace, message: Any, now: float, caller: Any) -> Any:
        if isinstance(message, KillJob):
            raise RuntimeError("a bug in a handler")
        return handle(self, message, now, caller)

    monkeypatch.setattr(LiveSpace, "_handle", buggy_handle)
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        go = stall_commits(monkeypatch, rt)
        created: list[emit.JobView] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def create() -> None:
                    created.append(await jobs.create("in flight"))

                nursery.start_soon(create)
                await wait_all_tasks_blocked()  # its write is with the writer
                with pytest.raises(RuntimeError, match="a bug in a handler"):
                    await jobs.kill("01ZZZZZZZZZZZZZZZZZZZZZZZZ")
                go.set()
            # The write in flight committed, and its caller heard so; then the space
            # reloaded from the store and serves again.
            [job] = created
            again = await jobs.create("after")
            assert [d.id for d in await jobs.poll(count=2)] == [job.id, again.id]


async def test_rows_that_cannot_be_made_are_a_bug_and_the_space_reloads(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    # Rows that fail to be made after memory took the change are a bug, as one in the
    # rules is: nothing of the step is written and the space reloads, so memory never
    # runs ahead of the log.
    event_record = records.event_record

    def failing(job_id: str, event: Any) -> Any:
        if "unwritable" in repr(event.data):
            raise TypeError("a row that cannot be made")
        return event_record(job_id, event)

    monkeypatch.setattr(space_actor, "event_record", failing)
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j")
        await jobs.poll(ack=True)
        with trio.fail_after(10):
            with pytest.raises(TypeError):
                await jobs.event(job.id, "deep", "unwritable")
            await jobs.event(job.id, "after", 1)
            view = await jobs.get(job.id)
        assert view.events is not None
        assert [(e.seq, str(e.type)) for e in view.events] == [
            (1, "created"), (2, "delivered"), (3, "started"), (4, "event"),
        ]  # fmt: skip


async def test_data_nested_too_deep_to_frame_is_refused_and_changes_nothing(
    autojump_clock: MockClock,
    new_store: Callable[[], Store],
) -> None:
    # JSON that orjson takes alone but not once framed as an event (255 levels at
    # most) is bad input: refused before the space sees it.
    deep: Any = 1
    for _ in range(254):
        deep = [deep]
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j")
        await jobs.poll(ack=True)
        with pytest.raises(emit.InvalidRequest, match="nested deeper than 200 levels"):
            await jobs.event(job.id, "deep", deep)
        with pytest.raises(emit.InvalidRequest, match="nested deeper"):
            await jobs.complete(job.id, deep)
        with pytest.raises(emit.InvalidRequest, match="nested deeper"):
            await jobs.create("deep", deep)
        view = await jobs.get(job.id)
        assert view.status == "running" and view.events is not None
        assert len(view.events) == 3
