"""The store writer actor: a failed write refuses the later writes of its source, and
forgets the source once nothing refers to it (the record of failures does not grow)."""

from __future__ import annotations

import gc

import pytest
import trio
from trio.testing import MockClock

import actors
from emit.errors import Unavailable
from emit.store.memory import MemoryStore
from emit.store.records import Changes, Space
from emit.store.writer import Source, StoreWriter, Write

SPACE = Space("01SPACE0000000000000000000", "s", "emit_pub_x", 1000.0, {})


async def test_a_failed_source_is_refused_then_forgotten(autojump_clock: MockClock) -> None:
    store = MemoryStore()
    await store.open()
    writer = StoreWriter(store)
    outcomes: list[BaseException | None] = []
    first, rest = trio.Event(), trio.Event()

    def record(error: BaseException | None) -> None:
        outcomes.append(error)
        (first if len(outcomes) == 1 else rest if len(outcomes) == 3 else trio.Event()).set()

    async with actors.open_system() as system:
        ref = await system.spawn(lambda: writer)
        source, other = Source(), Source()
        store.fail_next = OSError("disk full")
        await ref.send(Write(Changes(spaces=[SPACE]), record, source))
        await first.wait()
        await ref.send(Write(Changes(spaces=[SPACE]), record, source))  # built on the failure
        await ref.send(Write(Changes(spaces=[SPACE]), record, other))
        await rest.wait()
        assert [type(error) for error in outcomes] == [OSError, Unavailable, type(None)]
        assert list(writer.failed_sources) == [source]
        outcomes.clear()  # the first failure's traceback holds the writer's frame
        del source
        gc.collect()
        assert len(writer.failed_sources) == 0


async def test_a_burst_of_writes_is_split_into_transactions_of_bounded_rows(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emit.domain.model import Event, EventType
    from emit.store import writer as writer_module
    from emit.store.records import event_row

    monkeypatch.setattr(writer_module, "GROUP_ROWS", 25)
    store = MemoryStore()
    await store.open()
    writer = StoreWriter(store)
    done = trio.Event()
    outcomes: list[BaseException | None] = []

    def record(error: BaseException | None) -> None:
        outcomes.append(error)
        if len(outcomes) == 4:
            done.set()

    rows = [event_row("J", Event(n, EventType.EVENT, 0, None, 1.0)) for n in range(10)]
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: writer)
        for _ in range(4):  # queued before the writer runs: one group, were it not bounded
            ref.tell_nowait(Write(Changes(spaces=[SPACE], events=list(rows)), record))
        await done.wait()
    assert outcomes == [None] * 4
    assert writer.transactions == 2  # 10 + 10 rows, then 10 + 10: never 30 or more
