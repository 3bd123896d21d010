"""A runtime whose store other nodes share (``open_runtime(shared=True)``): it runs only
the spaces it is told it owns, stops one at once when told it lost it, and a space whose
write the store refuses because another node claimed it (the fence) answers 503 with
when to retry, writes nothing, and stops for good. The store here is the in-memory one
acting as a shared store (`MemoryStore.owners`); the PostgreSQL store checks the same
fence inside its transactions."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

import emit
from emit.callbacks.policy import CallbackPolicy
from emit.errors import Unavailable
from emit.store.memory import MemoryStore


@pytest.fixture
def store() -> MemoryStore:
    made = MemoryStore()
    made.owners = {}
    return made


@pytest.fixture
async def rt(store: MemoryStore) -> AsyncIterator[emit.Runtime]:
    async with emit.open_runtime(store, shared=True) as runtime:
        yield runtime


async def claimed(rt: emit.Runtime, store: MemoryStore, space_id: str, epoch: int) -> None:
    """What the cluster's membership does: claim in the store, then tell the runtime."""
    assert store.owners is not None
    store.owners[space_id] = epoch
    await rt.gained(space_id, epoch)
    await wait_all_tasks_blocked()  # the space loads on its own, after the gain


async def test_a_space_runs_only_once_this_node_owns_it(
    autojump_clock: MockClock, rt: emit.Runtime, store: MemoryStore
) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    with pytest.raises(Unavailable) as refused:
        await jobs.create("j")
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert rt.spaces.whereis(space.id) is None
    await claimed(rt, store, space.id, 1)
    job = await jobs.create("j")
    assert (await jobs.get(job.id)).status == "pending"


async def test_a_lost_space_stops_at_once_and_its_parked_polls_are_answered(
    autojump_clock: MockClock, rt: emit.Runtime, store: MemoryStore
) -> None:
    space = await rt.create_space("s")
    await claimed(rt, store, space.id, 1)
    jobs = rt.space(space.id)
    await jobs.create("before")
    answered: list[object] = []

    async def parked() -> None:
        await jobs.poll(names=["other"], wait=60)  # nothing of that name: it parks
        answered.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(parked)
        await wait_all_tasks_blocked()
        began = trio.current_time()
        await rt.lost(space.id)
    assert answered == [began]  # answered (empty) as the space stopped, not after 60 s
    assert rt.spaces.whereis(space.id) is None
    with pytest.raises(Unavailable):
        await jobs.create("after")
    # Another node's now: this one writes nothing more to it.
    assert sorted(row["name"] for row in store.jobs.values()) == ["before"]


async def test_a_write_fenced_by_another_nodes_claim_is_refused_and_the_space_stops(
    autojump_clock: MockClock, rt: emit.Runtime, store: MemoryStore
) -> None:
    assert store.owners is not None
    moving, staying = await rt.create_space("moving"), await rt.create_space("staying")
    await claimed(rt, store, moving.id, 1)
    await claimed(rt, store, staying.id, 1)
    kept = await rt.space(moving.id).create("kept")
    store.owners[moving.id] = 2  # another node claimed it; this one was not told yet
    with pytest.raises(Unavailable, match="moved to another node") as refused:
        await rt.space(moving.id).create("late")
    assert refused.value.retry_after is not None
    assert [row["name"] for row in store.jobs.values()] == ["kept"]  # the late write: none
    await wait_all_tasks_blocked()
    assert rt.owned is not None and moving.id not in rt.owned
    assert rt.spaces.whereis(moving.id) is None  # stopped for good, not reloaded
    with pytest.raises(Unavailable):
        await rt.space(moving.id).poll()
    # The other space of this node goes on.
    assert (await rt.space(staying.id).create("fine")).name == "fine"
    # And when the space comes back to this node, it loads what the store has.
    await claimed(rt, store, moving.id, 3)
    assert (await rt.space(moving.id).get(kept.id)).name == "kept"
    assert (await rt.space(moving.id).create("again")).name == "again"


async def test_gained_again_replaces_the_incarnation_of_an_earlier_epoch(
    autojump_clock: MockClock, rt: emit.Runtime, store: MemoryStore
) -> None:
    space = await rt.create_space("s")
    await claimed(rt, store, space.id, 1)
    first = rt.spaces.whereis(space.id)
    await claimed(rt, store, space.id, 2)  # lost and claimed back while partitioned
    second = rt.spaces.whereis(space.id)
    assert first is not None and second is not None and first is not second
    assert (await rt.space(space.id).create("j")).name == "j"  # written at epoch 2


async def test_a_runtime_alone_on_its_store_owns_every_space(autojump_clock: MockClock) -> None:
    async with emit.open_runtime(None) as rt:
        space = await rt.create_space("s")
        assert (await rt.space(space.id).create("j")).name == "j"
        with pytest.raises(RuntimeError, match="shared=True"):
            await rt.gained(space.id, 1)


async def test_a_callback_is_sent_by_its_spaces_owner_and_the_next_owner_takes_it_over(
    autojump_clock: MockClock,
) -> None:
    """Two nodes on one shared store: the first owner's try fails (503) and is recorded
    with a retry due; the space moves; the new owner finds the callback pending in the
    outbox and sends it; the old owner sends nothing more."""
    store = MemoryStore()
    store.owners = {}
    tries: list[str] = []
    answers = {"a": 503, "b": 200}
    tried = {"a": trio.Event(), "b": trio.Event()}

    def receiver(node: str) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            tries.append(node)
            tried[node].set()
            return httpx.Response(answers[node])

        return httpx.MockTransport(answer)

    def node(name: str) -> AbstractAsyncContextManager[emit.Runtime]:
        return emit.open_runtime(
            store,
            shared=True,
            allow_private_callbacks=True,
            callback_policy=CallbackPolicy(first_delay=30.0),
            callback_transport=receiver(name),
        )

    async with node("a") as a, node("b") as b:
        space = await a.create_space("s")
        await claimed(a, store, space.id, 1)
        jobs = a.space(space.id)
        job = await jobs.create("j", callback_url="https://hooks.test/done")
        await jobs.claim(job.id)
        await jobs.complete(job.id)
        await tried["a"].wait()
        await wait_all_tasks_blocked()  # its try recorded, the retry due in 30 s or more
        await a.lost(space.id)  # its lease lapsed: a stops the space
        await claimed(b, store, space.id, 2)
        with trio.fail_after(120):
            await tried["b"].wait()
        await trio.sleep(600)  # long past every retry a could have had
        assert tries == ["a", "b"]
        events = [e.type.value for e in (await b.space(space.id).get(job.id)).events or ()]
        assert events.count("callback_failed") == 1 and events.count("callback_sent") == 1
        assert store.callbacks[next(iter(store.callbacks))].state == "delivered"
