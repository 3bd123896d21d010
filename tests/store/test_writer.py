"""The store writer actor: it reports each write to its client as a message, in order,
without ever waiting on the client; a failed write refuses the later writes of its
source, and forgets the source once nothing refers to it (the record of failures does
not grow)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import actors
from emit.domain.records import Space
from emit.errors import Unavailable
from emit.store.memory import MemoryStore
from emit.store.records import Changes
from emit.store.writer import Commit, Source, StoreWriter, Write, Written

SPACE = Space("01SPACE0000000000000000000", "s", "emit_pub_x", 1000.0, {})


class Client(actors.Actor[Written]):
    """Records the writer's reports; sets ``arrived`` once it has ``expect`` of them."""

    def __init__(self, expect: int) -> None:
        self.reports: list[Written] = []
        self.expect = expect
        self.arrived = trio.Event()

    async def receive(self, message: Written) -> object:
        self.reports.append(message)
        if len(self.reports) >= self.expect:
            self.arrived.set()
        return None


async def test_a_failed_source_is_refused_then_forgotten(autojump_clock: MockClock) -> None:
    store = MemoryStore()
    await store.open()
    writer = StoreWriter(store)
    client = Client(expect=1)
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: writer)
        to = await system.spawn(lambda: client)
        source, other = Source(), Source()
        store.fail_next = OSError("disk full")
        await ref.send(Write(Changes(spaces=[SPACE]), to, 1, source))
        await client.arrived.wait()
        client.expect, client.arrived = 3, trio.Event()
        await ref.send(Write(Changes(spaces=[SPACE]), to, 2, source))  # built on the failure
        await ref.send(Write(Changes(spaces=[SPACE]), to, 3, other))
        await client.arrived.wait()
        assert [(r.batch, type(r.error)) for r in client.reports] == [
            (1, OSError), (2, Unavailable), (3, type(None)),
        ]  # fmt: skip
        assert list(writer.failed_sources) == [source]
        client.reports.clear()  # the first failure's traceback holds the writer's frame
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
    client = Client(expect=4)
    rows = [event_row("J", Event(n, EventType.EVENT, 0, None, 1.0)) for n in range(10)]
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: writer)
        to = await system.spawn(lambda: client)
        for n in range(4):  # queued before the writer runs: one group, were it not bounded
            ref.tell_nowait(Write(Changes(spaces=[SPACE], events=list(rows)), to, n))
        await client.arrived.wait()
    assert [(r.batch, r.error) for r in client.reports] == [(n, None) for n in range(4)]
    assert writer.transactions == 2  # 10 + 10 rows, then 10 + 10: never 30 or more


class Stuck(actors.Actor[Any]):
    """A client busy elsewhere: it reads nothing until ``go`` is set."""

    def __init__(self, expect: int) -> None:
        self.go = trio.Event()
        self.reports: list[Written] = []
        self.expect = expect
        self.arrived = trio.Event()

    async def receive(self, message: Any) -> object:
        if message == "wait":
            await self.go.wait()
        else:
            self.reports.append(message)
            if len(self.reports) == self.expect:
                self.arrived.set()
        return None


async def test_a_client_with_a_full_mailbox_holds_up_nobody_and_loses_nothing(
    autojump_clock: MockClock,
) -> None:
    store = MemoryStore()
    await store.open()
    stuck = Stuck(expect=5)
    async with actors.open_system() as system:
        writer = await system.spawn(lambda: StoreWriter(store))
        slow = await system.spawn(lambda: stuck, capacity=2)
        slow.tell_nowait("wait")
        await wait_all_tasks_blocked()
        for n in range(5):  # room for two reports; three wait
            await writer.send(Write(Changes(spaces=[SPACE]), slow, n))
        with trio.fail_after(5):
            await writer.ask(Commit(Changes()))  # the writer carries on meanwhile
        assert stuck.reports == []
        stuck.go.set()
        with trio.fail_after(5):
            await stuck.arrived.wait()
        assert [r.batch for r in stuck.reports] == [0, 1, 2, 3, 4]


async def test_writes_of_a_space_that_moved_are_refused_and_the_others_committed(
    autojump_clock: MockClock,
) -> None:
    """With nodes sharing the store, a transaction holding writes of a space this node
    lost is refused whole (`Fenced`); the writer refuses those writes, and their
    source's later ones untried, and commits the rest of the group without them."""
    store = MemoryStore()
    await store.open()
    store.owners = {"A": 1, "B": 2}  # B moved on: this node wrote it at epoch 1
    writer = StoreWriter(store)
    client = Client(expect=3)
    mine = Space("01SPACE000000000000000000A", "a", "emit_pub_a", 1000.0, {})
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: writer)
        to = await system.spawn(lambda: client)
        a, b = Source(), Source()
        # Queued before the writer runs: one group, were it not for the fence.
        ref.tell_nowait(Write(Changes(spaces=[mine], fence=("A", 1)), to, 1, a))
        ref.tell_nowait(Write(Changes(spaces=[SPACE], fence=("B", 1)), to, 2, b))
        ref.tell_nowait(Write(Changes(fence=("A", 1)), to, 3, a))
        await client.arrived.wait()
        client.expect, client.arrived = 4, trio.Event()
        await ref.send(Write(Changes(spaces=[SPACE], fence=("B", 1)), to, 4, b))
        await client.arrived.wait()
    assert [(r.batch, type(r.error).__name__) for r in client.reports] == [
        (2, "Fenced"), (1, "NoneType"), (3, "NoneType"), (4, "Fenced"),
    ]  # fmt: skip
    assert list(client.reports[0].error.spaces) == ["B"]  # type: ignore[union-attr]
    assert list(store.spaces) == [mine.id]  # B's space never reached the store
    assert store.commits == 1  # the group, once, without B's write
    assert writer.transactions == 1
