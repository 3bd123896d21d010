"""Ordered start and shutdown: children start in order and stop in reverse, each within
its grace period; queued messages are drained or rejected as the spec says.

Every test runs on trio's MockClock with autojump, so grace periods are measured exactly.
"""

import pytest
import trio
from trio.testing import MockClock

import actors
from actors import StopPolicy, SupervisorSpec

from .kit import Journal, spec


async def test_children_start_in_order_and_stop_in_reverse(autojump_clock: MockClock) -> None:
    journal = Journal()
    tree = SupervisorSpec("tree", [spec("a", journal), spec("b", journal)])
    async with actors.open_system(children=[spec("store", journal), tree]) as system:
        await system.spawn(lambda: _Named("late", journal), key="late")
        assert journal.of("start") == ["store", "a", "b", "late"]
    # Reverse order, depth first: the last started stops first, the store last.
    assert journal.of("stop") == ["late", "b", "a", "store"]


class _Named(actors.Actor[object]):
    def __init__(self, name: str, journal: Journal) -> None:
        self.name, self.journal = name, journal

    async def started(self) -> None:
        self.journal.add("start", self.name)

    async def receive(self, message: object) -> object:
        return None

    async def stopped(self) -> None:
        self.journal.add("stop", self.name)


async def test_a_child_that_overruns_its_grace_is_cancelled(autojump_clock: MockClock) -> None:
    journal = Journal()
    children = [spec("quick", journal), spec("slow", journal, stop_delay=60, shutdown=2)]
    async with actors.open_system(children=children):
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(2)
    assert journal.of("stop") == ["quick"]  # slow was cancelled inside stopped()


async def test_a_child_within_its_grace_stops_cleanly(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system(children=[spec("w", journal, stop_delay=1, shutdown=2)]):
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(1)
    assert journal.of("stop") == ["w"]


async def test_drain_processes_queued_messages_before_stopping(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, on_stop=StopPolicy.DRAIN))
        for n in range(5):
            ref.tell_nowait(n)
        answer = ref.ask("count", timeout=None)
        async with trio.open_nursery() as nursery:
            answers: list[object] = []

            async def ask() -> None:
                answers.append(await answer)

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            # Nothing ran yet? Whatever ran, stopping now must still process the rest.
            await system.root.stop_child("w")
        assert answers == [5]
    assert len(journal.of("got")) == 5
    assert journal.of("stop") == ["w"]


async def test_reject_fails_queued_asks_and_drops_tells(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, on_stop=StopPolicy.REJECT))
        ref.tell_nowait(("sleep", 1.0))  # in progress at the stop, and within its grace
        await trio.testing.wait_all_tasks_blocked()
        for n in range(3):
            ref.tell_nowait(n)
        outcomes: list[str] = []

        async def ask() -> None:
            try:
                await ref.ask("count", timeout=None)
            except actors.ActorStopped:
                outcomes.append("stopped")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            await system.root.stop_child("w")
        assert outcomes == ["stopped"]
    # The message in progress finished (count went up), the queued ones were dropped.
    assert journal.of("got") == []
    assert journal.of("stop") == ["w"]


async def test_drain_is_cut_short_by_the_grace_period(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, on_stop=StopPolicy.DRAIN, shutdown=3))
        for _ in range(10):
            ref.tell_nowait(("sleep", 1.0))
        late: list[str] = []

        async def ask() -> None:
            try:
                await ref.ask("count", timeout=None)
            except actors.ActorStopped:
                late.append("stopped")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await system.root.stop_child("w")
            assert trio.current_time() - start == pytest.approx(3)
        assert late == ["stopped"]  # the ask queued behind the drain never hangs


async def test_system_stop_is_idempotent_and_refuses_new_children(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system(children=[spec("w", journal)]) as system:
        await system.stop()
        await system.stop()
        assert journal.of("stop") == ["w"]
        with pytest.raises(actors.ActorStopped):
            await system.spawn(lambda: _Named("x", journal))
