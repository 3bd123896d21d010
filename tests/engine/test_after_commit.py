"""After-commit work (stream publishing, webhook hints, push wakes, answers) is the
space's own: the store writer only reports that a write committed or failed. A space
whose after-commit code raises restarts alone; the writer and other spaces carry on."""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

import emit
from emit.realtime.hub import Published


async def test_a_failing_publish_restarts_its_space_only(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="actors")
    async with emit.open_runtime(None) as rt:
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
