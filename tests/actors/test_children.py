"""Dynamic children, and refs that outlive restarts.

Every test runs on trio's MockClock with autojump.
"""

import pytest
import trio
from trio.testing import MockClock

import actors
from actors import Restart, RestartBackoff, SupervisorSpec

from .kit import Crash, Journal, settle, spec

NO_BACKOFF = RestartBackoff(initial=0, factor=1, maximum=0)


async def test_a_ref_reaches_the_new_incarnation_after_a_restart(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system(backoff=NO_BACKOFF) as system:
        ref = await system.start(spec("w", journal))
        for expected in range(1, 4):
            ref.tell_nowait("crash")
            # Nobody looks the actor up again: the same ref reaches incarnation n.
            assert await ref.ask("incarnation") == expected
        assert not ref.stopped
        assert system.whereis("w") is ref


async def test_messages_sent_during_the_restart_backoff_are_kept(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    backoff = RestartBackoff(initial=30, factor=1, maximum=30)
    async with actors.open_system(within=100, backoff=backoff) as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait("crash")
        await trio.sleep(10)  # the actor is down, waiting out its backoff
        ref.tell_nowait("sent while down")
        assert await ref.ask("count", timeout=None) == 1
        assert trio.current_time() == pytest.approx(30)


async def test_many_dynamic_children_are_isolated_and_found_by_key(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system(backoff=NO_BACKOFF) as system:
        spaces = await system.start(SupervisorSpec("spaces", max_restarts=50, backoff=NO_BACKOFF))
        refs = {}
        for n in range(500):
            key = f"space-{n}"
            refs[key] = await spaces.start_child(spec(key, journal))
        assert spaces.children() == list(refs)
        for n in range(0, 500, 50):
            refs[f"space-{n}"].tell_nowait("crash")
        for ref in refs.values():
            ref.tell_nowait("x")
        for key, ref in refs.items():
            assert spaces.whereis(key) is ref
            crashed = int(key.split("-")[1]) % 50 == 0
            assert await ref.ask("incarnation") == (1 if crashed else 0)
            assert await ref.ask("count") == 1
        assert journal.of("start").count("space-1") == 1


async def test_start_child_refuses_a_duplicate_key_unless_exist_ok(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        first = await system.start(spec("w", journal))
        with pytest.raises(actors.DuplicateChild, match="'w' already exists"):
            await system.start(spec("w", journal))
        assert await system.root.start_child(spec("w", journal), exist_ok=True) is first
        assert journal.of("start") == ["w"]


async def test_concurrent_get_or_start_starts_one_child(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        refs: list[actors.ActorRef[object]] = []

        async def get_or_start() -> None:
            refs.append(await system.root.start_child(spec("w", journal), exist_ok=True))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(get_or_start)
        assert len(refs) == 10
        assert all(ref is refs[0] for ref in refs)
        assert journal.of("start") == ["w"]


async def test_a_child_that_fails_to_start_is_reported_and_not_kept(
    autojump_clock: MockClock,
) -> None:
    class NoStart(actors.Actor[object]):
        async def started(self) -> None:
            raise Crash("no database")

        async def receive(self, message: object) -> object:
            return None

    async with actors.open_system() as system:
        with pytest.raises(actors.ChildStartFailed, match="'db' failed to start") as caught:
            await system.root.start_child(actors.ActorSpec("db", NoStart))
        assert isinstance(caught.value.__cause__, Crash)
        assert system.whereis("db") is None
        assert system.root.children() == []


async def test_stop_child_stops_it_for_good(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        await system.root.stop_child("w")
        assert ref.stopped
        assert system.whereis("w") is None
        with pytest.raises(actors.ChildNotFound):
            await system.root.stop_child("w")
        again = await system.start(spec("w", journal))  # the key is free again
        assert again is not ref
        assert await again.ask("count") == 0


async def test_dynamic_children_end_with_their_supervisor_incarnation(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    trigger = spec("trigger", journal)
    tree = SupervisorSpec("tree", [trigger], max_restarts=0, backoff=NO_BACKOFF)
    async with actors.open_system(backoff=NO_BACKOFF) as system:
        tree_ref = await system.start(tree)
        dynamic = await tree_ref.start_child(spec("dyn", journal, restart=Restart.PERMANENT))
        static = tree_ref.whereis("trigger")
        assert isinstance(static, actors.ActorRef)
        static.tell_nowait("crash")  # max_restarts=0: the tree gives up and is restarted
        await trio.testing.wait_all_tasks_blocked()
        assert dynamic.stopped
        assert tree_ref.whereis("dyn") is None
        assert not static.stopped
        assert tree_ref.children() == ["trigger"]


# --------------------------------------------------------------------------------------
# The supervisor's loop stays responsive: a child's start-up and a restart backoff run
# beside it, never in it.
# --------------------------------------------------------------------------------------


class SlowStart(actors.Actor[object]):
    async def started(self) -> None:
        await trio.sleep(100)  # loading a big state

    async def receive(self, message: object) -> object:
        return "slow"


async def test_a_slow_start_does_not_delay_starting_or_stopping_another_child(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system, trio.open_nursery() as nursery:
        nursery.start_soon(lambda: system.root.start_child(actors.ActorSpec("slow", SlowStart)))
        await settle()
        start = trio.current_time()
        with trio.fail_after(1):
            other = await system.root.start_child(spec("other", journal))
            assert await other.ask("count") == 0
            await system.root.stop_child("other")
        assert trio.current_time() == start
        assert system.whereis("slow") is None  # still starting
        await trio.sleep(101)
        slow = system.whereis("slow")
        assert isinstance(slow, actors.ActorRef)
        assert await slow.ask("hello") == "slow"


async def test_a_restart_backoff_does_not_delay_starting_another_child(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    backoff = RestartBackoff(initial=30, factor=1, maximum=30)
    async with actors.open_system(max_restarts=1, within=100, backoff=backoff) as system:
        crasher = await system.start(spec("crasher", journal))
        crasher.tell_nowait("crash")
        await settle()  # its restart waits out the 30 s backoff now
        start = trio.current_time()
        with trio.fail_after(1):
            await system.start(spec("other", journal))
        assert trio.current_time() == start
        assert journal.of("start") == ["crasher", "other"]
        assert await crasher.ask("incarnation", timeout=None) == 1
        assert trio.current_time() == pytest.approx(start + 30)


async def test_a_start_child_that_times_out_still_starts_the_child(
    autojump_clock: MockClock,
) -> None:
    async with actors.open_system() as system:
        with pytest.raises(actors.AskTimeout):
            await system.root.start_child(actors.ActorSpec("slow", SlowStart), timeout=1)
        await trio.sleep(100)  # its start-up went on
        slow = system.whereis("slow")
        assert isinstance(slow, actors.ActorRef)
        assert await slow.ask("hello") == "slow"
