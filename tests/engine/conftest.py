"""Engine tests run the whole runtime with the in-memory store. Tests that involve time
also take ``autojump_clock``: deadlines, backoff and long polls then pass instantly."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import emit
from emit.store.records import Changes


@pytest.fixture
async def rt() -> AsyncIterator[emit.Runtime]:
    async with emit.open_runtime(None) as runtime:
        yield runtime


@pytest.fixture
async def jobs(rt: emit.Runtime) -> emit.SpaceJobs:
    space = await rt.create_space("test")
    return rt.space(space.id)


def stall_commits(monkeypatch: pytest.MonkeyPatch, rt: emit.Runtime) -> trio.Event:
    """Hold every commit of ``rt``'s store until the returned event is set: the writes
    handed over meanwhile stay in flight."""
    store = rt.store
    commit = store.commit
    go = trio.Event()

    async def stalled_commit(changes: list[Changes]) -> None:
        await go.wait()
        await commit(changes)

    monkeypatch.setattr(store, "commit", stalled_commit)
    return go


def crash_when_told(monkeypatch: pytest.MonkeyPatch, actor: type[Any], what: str) -> None:
    """Make every ``actor`` told the string ``"crash"`` raise
    ``RuntimeError("injected <what> crash")``, a bug in its ``receive``."""
    receive = actor.receive

    async def crashing_receive(self: Any, message: Any) -> object:
        if message == "crash":
            raise RuntimeError(f"injected {what} crash")
        return await receive(self, message)

    monkeypatch.setattr(actor, "receive", crashing_receive)
