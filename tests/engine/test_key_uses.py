"""When each key was last used: noted in memory on each use, written in one commit every
`KEY_USES_EVERY` seconds and as the runtime stops, never a write per request; shown
(flushed or not) by `list_tokens`, and kept across a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from trio.testing import MockClock

import emit
from emit.runtime import KEY_USES_EVERY
from emit.store.base import Store
from emit.store.memory import MemoryStore

START = 1_800_000_000.0


async def test_uses_are_noted_in_memory_and_written_in_batches(autojump_clock: MockClock) -> None:
    with trio.fail_after(600):
        async with emit.open_runtime(None, start_time=START) as rt:
            store = rt.store
            assert isinstance(store, MemoryStore)
            space = (await rt.create_space("s")).id
            used = await rt.create_token(space, name="used", preset="worker")
            idle = await rt.create_token(space, name="idle", preset="worker")
            await trio.sleep(1)
            commits = store.commits
            for _ in range(100):
                rt.note_key_use(used.id)
                await trio.sleep(0.1)
            assert store.commits == commits  # no write per use
            assert store.tokens[used.id].last_used_at is None
            listed = {t.name: t.last_used_at for t in await rt.list_tokens(space)}
            assert listed["used"] == START + 1 + 9.9
            assert listed["idle"] is None  # shown before it is written

            await trio.sleep(KEY_USES_EVERY)
            assert store.commits == commits + 1  # every use in one commit
            assert store.tokens[used.id].last_used_at == START + 1 + 9.9
            assert store.tokens[idle.id].last_used_at is None
            await trio.sleep(KEY_USES_EVERY)
            assert store.commits == commits + 1  # nothing new: nothing written

            # An older use never replaces a newer one that was written
            rt.key_uses[used.id] = START
            assert await rt.flush_key_uses() == 1
            assert store.tokens[used.id].last_used_at == START + 1 + 9.9


async def test_a_failed_flush_keeps_the_uses_for_the_next(autojump_clock: MockClock) -> None:
    with trio.fail_after(600):
        async with emit.open_runtime(None, start_time=START) as rt:
            store = rt.store
            assert isinstance(store, MemoryStore)
            space = (await rt.create_space("s")).id
            token = await rt.create_token(space, name="k", preset="worker")
            rt.note_key_use(token.id)
            store.fail_next = OSError("disk full")
            with pytest.raises(emit.Unavailable):
                await rt.flush_key_uses()
            assert token.id in rt.key_uses
            assert await rt.flush_key_uses() == 1
            assert store.tokens[token.id].last_used_at == START


async def test_the_last_use_survives_a_restart(new_store: Callable[[], Store]) -> None:
    with trio.fail_after(60):
        async with emit.open_runtime(new_store()) as rt:
            space = (await rt.create_space("s")).id
            token = await rt.create_token(space, name="k", preset="worker")
            rt.note_key_use(token.id)
            at = rt.key_uses[token.id]
        # Stopping wrote it: the next start reads it from the store
        async with emit.open_runtime(new_store()) as rt:
            assert rt.key_uses == {}
            [found] = [t for t in await rt.list_tokens(space) if t.id == token.id]
            assert found.last_used_at == at
