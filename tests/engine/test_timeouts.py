"""A caller that stops waiting does not know what happened: a space that did not answer
in time may still commit the change, so the caller is told the outcome is unknown (and
how to find out), never that nothing happened."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from trio.testing import MockClock

import emit
from emit.store.base import Store
from emit.store.records import Changes


async def test_an_ask_timeout_says_the_outcome_is_unknown(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        store = rt.store
        commit = store.commit
        slow = trio.Event()

        async def stalled_commit(changes: list[Changes]) -> None:
            await slow.wait()  # the disk stalls longer than the caller waits
            await commit(changes)

        monkeypatch.setattr(store, "commit", stalled_commit)
        with trio.fail_after(emit.runtime.ASK_TIMEOUT + 5):
            with pytest.raises(emit.Unavailable, match="may or may not have been made") as info:
                await jobs.create("slow")
        assert "idempotency key" in info.value.message and info.value.status == 503
        slow.set()
        monkeypatch.setattr(store, "commit", commit)
        with trio.fail_after(5):
            await jobs.settled()
            page, total = await jobs.list()
        assert total == 1 and page[0].name == "slow"  # it was made, after all
