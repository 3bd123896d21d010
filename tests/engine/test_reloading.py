"""A space whose store write failed restarts and reloads from the store promptly, even
when it has deadlines that came due meanwhile: its timer must not keep it from reading
the failure notice (nor a stop, nor the asks queued behind them)."""

import pytest
import trio
from trio.testing import MockClock

import actors
import emit
from emit.store.base import SpaceState
from emit.store.memory import MemoryStore
from emit.store.records import Changes


class FaultyStore(MemoryStore):
    """A memory store whose commits wait at a gate and fail on demand (``fail_next``),
    as a slow, then full, disk would; it counts the loads of spaces."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.gate.set()
        self.loads = 0

    async def commit(self, batches: list[Changes]) -> None:
        await self.gate.wait()
        await super().commit(batches)

    async def load_space(self, space_id: str) -> SpaceState | None:
        self.loads += 1
        return await super().load_space(space_id)


async def test_a_space_whose_write_failed_reloads_promptly_with_deadlines_due(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FaultyStore()
    monkeypatch.setattr(emit.runtime, "MemoryStore", lambda: store)
    # In the test's body, not a fixture: a failure cancels the runtime at once instead
    # of waiting for a stop that a starved space would never read.
    async with emit.open_runtime(None) as rt:
        await _reload_after_a_failed_write(rt, store)


async def _reload_after_a_failed_write(rt: emit.Runtime, store: FaultyStore) -> None:
    space = await rt.create_space("s")
    jobs = rt.space(space.id)
    leased = await jobs.create("leased", timeout_seconds=10)
    [delivery] = await jobs.poll()
    assert delivery.id == leased.id
    ref = rt.spaces.whereis(space.id)
    assert isinstance(ref, actors.ActorRef)
    loads = store.loads
    outcomes: list[str] = []

    async def create_ghost() -> None:
        try:
            await jobs.create("ghost")
            outcomes.append("created")
        except emit.Unavailable:
            outcomes.append("refused")

    async def ack_unknown() -> None:
        # It reads the store once the write in flight is decided; that write fails, so
        # the space is ending and refuses it as unavailable (before, once, not found).
        with pytest.raises((emit.NotFound, emit.Unavailable)):
            await jobs.ack("0" * 26)

    store.gate = trio.Event()
    store.fail_next = OSError("disk full")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(create_ghost)  # its write waits at the gate, then fails
        await trio.testing.wait_all_tasks_blocked()
        # The space waits for that write to settle before it reads the store for this
        # job; meanwhile the lease's deadline passes, unhandled.
        nursery.start_soon(ack_unknown)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(20)
        store.gate.set()
    assert outcomes == ["refused"]
    # The failure notice is in the space's mailbox, and the lease deadline is due. The
    # space must read the notice (today's loop would run its timer for ever, and keep
    # the autojump clock from ever moving: count scheduler passes instead of time).
    for _ in range(1000):
        if ref.statistics().queued == 0:
            break
        await trio.lowlevel.checkpoint()
    else:
        pytest.fail("the space never read its mailbox: its due deadline starves it")
    # It refuses while it ends (its last writes reported), then restarts from the store.
    with trio.fail_after(5):
        while True:
            try:
                counts = await jobs.counts()
                break
            except emit.Unavailable:
                await trio.sleep(0.05)
    assert store.loads == loads + 1, "the space did not reload from the store"
    assert sum(counts.values()) == 1  # the ghost was never written
    assert "ghost" not in {job["name"] for job in store.jobs.values()}
    # The reloaded space handled the expired lease: the job is not running any more.
    assert counts[emit.JobStatus.RUNNING] == 0


class BrokenDisk(MemoryStore):
    """Every commit fails while ``failing`` (an empty one too: nothing can be written)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    async def commit(self, batches: list[Changes]) -> None:
        if self.failing:
            await trio.lowlevel.checkpoint()
            raise OSError("disk full")
        await super().commit(batches)


async def test_a_store_failing_for_minutes_gives_up_spaces_but_never_ends_the_runtime(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A space that cannot start again fails in a loop: its supervisor gives up within
    the bounded time its restart intensity allows, and the root restarts the spaces;
    ten minutes of it leave the runtime up, and it serves again once the store does."""
    store = BrokenDisk()
    monkeypatch.setattr(emit.runtime, "MemoryStore", lambda: store)
    async with emit.open_runtime(None) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        kept = await jobs.create("kept")
        store.failing = True
        start = trio.current_time()
        refused = 0
        with trio.fail_after(700):
            while trio.current_time() - start < 600:
                with pytest.raises(emit.Unavailable):
                    await jobs.create("refused")
                refused += 1
                await trio.sleep(1)
        gave_up = [r for r in caplog.records if "emit/spaces gives up" in r.getMessage()]
        assert gave_up, "the spaces supervisor never gave up on a space failing in a loop"
        assert not any("emit gives up" in r.getMessage() for r in caplog.records)
        store.failing = False
        with trio.fail_after(60):
            while True:
                try:
                    created = await jobs.create("after")
                    break
                except emit.Unavailable:
                    await trio.sleep(1)
        assert {kept.id, created.id} == {job["id"] for job in store.jobs.values()}


class SlowLoads(MemoryStore):
    """Loading a space of ``slow`` takes 100 s (a big space from a slow disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: set[str] = set()

    async def load_space(self, space_id: str) -> SpaceState | None:
        if space_id in self.slow:
            await trio.sleep(100)
        return await super().load_space(space_id)


async def test_a_slow_space_load_answers_503_in_time_and_never_holds_up_other_spaces(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SlowLoads()
    monkeypatch.setattr(emit.runtime, "MemoryStore", lambda: store)
    async with emit.open_runtime(None) as rt:
        slow = rt.space((await rt.create_space("slow")).id)
        other = rt.space((await rt.create_space("other")).id)
        for jobs in (slow, other):
            await rt.spaces.stop_child(jobs.space_id)  # the next request loads it again
        store.slow.add(slow.space_id)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()

            async def first_request() -> None:
                with pytest.raises(emit.Unavailable, match="still loading"):
                    await slow.counts()
                assert trio.current_time() - start == pytest.approx(emit.runtime.ASK_TIMEOUT)

            nursery.start_soon(first_request)
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(1):  # the supervisor starts other spaces meanwhile
                assert (await other.create("j")).status == "pending"
            assert trio.current_time() == start
        await trio.sleep(100)  # the load went on: the space is up now
        with trio.fail_after(1):
            assert sum((await slow.counts()).values()) == 0
