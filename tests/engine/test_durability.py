"""Write-ahead: nobody hears of a change before it is durable; concurrent changes share a
transaction; a failed write is refused whole and the space reloads from the store."""

from collections.abc import AsyncIterator

import pytest
import trio
from trio.testing import MockClock

import emit
from emit.store.memory import MemoryStore
from emit.store.records import Changes


class GatedStore(MemoryStore):
    """A memory store whose commits wait at a gate, as a slow disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.gate.set()
        self.batches_per_commit: list[int] = []

    async def commit(self, batches: list[Changes]) -> None:
        await self.gate.wait()
        await super().commit(batches)
        self.batches_per_commit.append(len(batches))


@pytest.fixture
async def gated(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[emit.Runtime, GatedStore]]:
    store = GatedStore()
    monkeypatch.setattr(emit.runtime, "MemoryStore", lambda: store)
    async with emit.open_runtime(None) as runtime:
        yield runtime, store


async def test_no_answer_before_the_change_is_durable(
    autojump_clock: MockClock, gated: tuple[emit.Runtime, GatedStore]
) -> None:
    rt, store = gated
    jobs = rt.space((await rt.create_space("s")).id)
    store.gate = trio.Event()
    answered: list[emit.JobView] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _create_into(jobs, answered))
        await trio.sleep(10)
        assert answered == []  # the write is stuck: the caller has heard nothing
        assert (await jobs.list())[1] == 0  # and no reader can see it either
        # Answers that changed nothing wait too: they could reveal the pending change.
        with trio.move_on_after(1):
            await jobs.counts()
            pytest.fail("counts answered before the change it counts was durable")
        store.gate.set()
    assert len(answered) == 1
    assert (await jobs.get(answered[0].id)).status == "pending"


async def _create_into(jobs: emit.SpaceJobs, into: list[emit.JobView]) -> None:
    into.append(await jobs.create("j"))


async def test_concurrent_changes_share_one_transaction(
    autojump_clock: MockClock, gated: tuple[emit.Runtime, GatedStore]
) -> None:
    rt, store = gated
    spaces = [rt.space((await rt.create_space(f"s{i}")).id) for i in range(3)]
    store.gate = trio.Event()
    before = store.commits
    async with trio.open_nursery() as nursery:
        for n in range(60):
            nursery.start_soon(spaces[n % 3].create, f"job-{n}")
        await trio.sleep(1)
        store.gate.set()
    # 60 creates in 3 spaces: the first commit was under way when the rest arrived, so
    # they all went into the next one.
    assert store.commits - before <= 3
    assert max(store.batches_per_commit) >= 50
    assert sum([(await space.list())[1] for space in spaces]) == 60


async def test_a_failed_write_is_refused_whole_and_the_space_reloads(
    autojump_clock: MockClock, gated: tuple[emit.Runtime, GatedStore]
) -> None:
    rt, store = gated
    jobs = rt.space((await rt.create_space("s")).id)
    kept = await jobs.create("kept")
    store.fail_next = OSError("disk full")
    with pytest.raises(emit.Unavailable, match="storage failed"):
        await jobs.create_many([{"name": "lost"}, {"name": "lost"}])
    # Memory ran ahead of the log; the space restarts from the store and carries on.
    page, total = await jobs.list()
    assert total == 1 and page[0].id == kept.id
    assert (await jobs.counts())[emit.JobStatus.PENDING] == 1
    [delivery] = await jobs.poll()
    assert delivery.id == kept.id
    assert (await jobs.complete(kept.id)).status == "completed"


async def test_writes_built_on_a_failed_write_never_reach_the_log(
    autojump_clock: MockClock, gated: tuple[emit.Runtime, GatedStore]
) -> None:
    rt, store = gated
    jobs = rt.space((await rt.create_space("s")).id)
    store.gate = trio.Event()
    store.fail_next = OSError("disk full")
    outcomes: list[str] = []

    async def create_then_poll() -> None:
        try:
            await jobs.create("ghost")
            outcomes.append("created")
        except emit.Unavailable:
            outcomes.append("create refused")

    async def poll() -> None:
        try:
            got = await jobs.poll()
            outcomes.append(f"polled {len(got)}")
        except emit.Unavailable:
            outcomes.append("poll refused")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(create_then_poll)
        await trio.sleep(1)
        nursery.start_soon(poll)  # delivers the ghost job, in memory only
        await trio.sleep(1)
        store.gate.set()
    assert sorted(outcomes) == ["create refused", "poll refused"]
    assert store.jobs == {} and store.events == {}


async def test_a_bug_in_one_message_does_not_refuse_the_writes_before_it(
    autojump_clock: MockClock,
    gated: tuple[emit.Runtime, GatedStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error in a handler restarts the space; writes of earlier messages
    already with the writer still get their real outcome, not a refusal."""
    rt, store = gated
    jobs = rt.space((await rt.create_space("s")).id)
    victim = await jobs.create("victim")
    store.gate = trio.Event()
    answered: list[emit.JobView] = []
    errors: list[BaseException] = []

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    async def kill() -> None:
        try:
            await jobs.kill(victim.id)
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _create_into(jobs, answered))
        await trio.sleep(1)  # that create's write now waits at the gate
        monkeypatch.setattr(emit.domain.lifecycle, "kill", broken)
        nursery.start_soon(kill)
        await trio.sleep(1)
        store.gate.set()
    monkeypatch.undo()
    assert [str(error) for error in errors] == ["a bug"]
    assert len(answered) == 1  # the create before the bug was answered, as created
    page, total = await jobs.list()
    assert total == 2 and {job.id for job in page} == {victim.id, answered[0].id}


async def test_a_stream_snapshot_never_counts_a_change_its_stream_also_sends(
    autojump_clock: MockClock, gated: tuple[emit.Runtime, GatedStore]
) -> None:
    """A space stream starts from counts and a seq: counts as of a commit, and the
    stream's seq at that same commit. A create still in flight is in neither, and its
    event comes after the seq: counted once, not twice."""
    rt, store = gated
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    await jobs.create("before")
    subscription, seq0, _, _ = rt.hub.subscribe_space(space.id, True, None, None)
    store.gate = trio.Event()
    snapshots: list[tuple[dict[emit.JobStatus, int], int]] = []

    async def snapshot() -> None:
        snapshots.append(await jobs.stream_snapshot())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: jobs.create("held"))  # its write waits at the gate
        await trio.sleep(1)
        nursery.start_soon(snapshot)
        await trio.sleep(1)
        store.gate.set()
    [(counts, at)] = snapshots
    assert counts[emit.JobStatus.PENDING] == 1 and at == seq0
    after = []
    while True:
        try:
            message = subscription.receive.receive_nowait()
        except trio.WouldBlock:
            break
        if message.seq > at:
            after.append(message.event.type)
    assert after == ["created"]
    assert (
        counts[emit.JobStatus.PENDING] + len(after) == (await jobs.counts())[emit.JobStatus.PENDING]
    )
