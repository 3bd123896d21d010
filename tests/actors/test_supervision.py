"""Supervisors: crash isolation by strategy, restart kinds, restart intensity and backoff,
and a supervisor that gives up handing the decision to its own supervisor.

Every test runs on trio's MockClock with autojump: backoff delays are measured exactly.
"""

from typing import Any

import pytest
import trio
from trio.testing import MockClock

import actors
from actors import Restart, RestartBackoff, Strategy, SupervisorSpec

from .kit import Crash, Journal, spec

NO_BACKOFF = RestartBackoff(initial=0, factor=1, maximum=0)


def three(journal: Journal, **options: Any) -> list[actors.ActorSpec[object]]:
    return [spec(name, journal, **options) for name in ("a", "b", "c")]


async def crash_and_settle(ref: actors.ActorRef[object]) -> None:
    ref.tell_nowait("crash")
    await trio.testing.wait_all_tasks_blocked()


async def start_tree(
    system: actors.ActorSystem, journal: Journal, strategy: Strategy
) -> list[actors.ActorRef[object]]:
    sup = await system.start(
        SupervisorSpec("sup", three(journal), strategy=strategy, backoff=NO_BACKOFF)
    )
    refs = [sup.whereis(name) for name in ("a", "b", "c")]
    assert all(isinstance(ref, actors.ActorRef) for ref in refs)
    for ref in refs:
        await ref.send("x")  # type: ignore[union-attr]
    return refs  # type: ignore[return-value]


async def counts(refs: list[actors.ActorRef[object]]) -> list[int]:
    return [await ref.ask("count") for ref in refs]


async def test_one_for_one_restarts_only_the_crashed_child(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        a, b, c = await start_tree(system, journal, Strategy.ONE_FOR_ONE)
        await crash_and_settle(b)
        assert await counts([a, b, c]) == [1, 0, 1]
    assert journal.of("start") == ["a", "b", "c", "b"]
    assert journal.of("stop")[:1] == ["b"]  # stopped() runs after the crash too


async def test_one_for_all_restarts_every_child_in_order(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        a, b, c = await start_tree(system, journal, Strategy.ONE_FOR_ALL)
        await crash_and_settle(b)
        assert await counts([a, b, c]) == [0, 0, 0]
        # b crashed; the others stopped in reverse order; then all started in order.
        assert journal.of("stop") == ["b", "c", "a"]
        assert journal.of("start") == ["a", "b", "c", "a", "b", "c"]


async def test_rest_for_one_restarts_the_child_and_those_after_it(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        a, b, c = await start_tree(system, journal, Strategy.REST_FOR_ONE)
        await crash_and_settle(b)
        assert await counts([a, b, c]) == [1, 0, 0]
        assert journal.of("stop") == ["b", "c"]
        assert journal.of("start") == ["a", "b", "c", "b", "c"]


async def test_group_restart_keeps_queued_messages_for_the_new_incarnation(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        _a, b, c = await start_tree(system, journal, Strategy.ONE_FOR_ALL)
        b.tell_nowait("crash")
        c.tell_nowait("queued behind the restart")
        await trio.testing.wait_all_tasks_blocked()
        assert await c.ask("count") in (0, 1)  # delivered to c, before or after its restart
        got = [e[2] for e in journal.entries if e[:2] == ("got", "c")]
        assert "'queued behind the restart'" in got


@pytest.mark.parametrize(
    ("restart", "message", "restarted"),
    [
        (Restart.PERMANENT, "crash", True),
        (Restart.PERMANENT, "stop", True),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TRANSIENT, "stop", False),
        (Restart.TEMPORARY, "crash", False),
        (Restart.TEMPORARY, "stop", False),
    ],
)
async def test_restart_kinds(
    autojump_clock: MockClock, restart: Restart, message: str, restarted: bool
) -> None:
    journal = Journal()
    async with actors.open_system(backoff=NO_BACKOFF) as system:
        ref = await system.start(spec("w", journal, restart=restart))
        ref.tell_nowait(message)
        await trio.testing.wait_all_tasks_blocked()
        assert journal.of("start") == (["w", "w"] if restarted else ["w"])
        assert ref.stopped is not restarted
        assert (system.whereis("w") is ref) is restarted


async def test_restart_backoff_grows_within_the_window(autojump_clock: MockClock) -> None:
    journal = Journal()
    backoff = RestartBackoff(initial=0.5, factor=2, maximum=1.5)
    async with actors.open_system(max_restarts=10, within=100, backoff=backoff) as system:
        ref = await system.start(spec("w", journal))
        start_times = []
        for _ in range(4):
            before = trio.current_time()
            await ref.send("crash")
            assert await ref.ask("count", timeout=None) == 0  # answered by the new incarnation
            start_times.append(trio.current_time() - before)
        assert start_times == pytest.approx([0.5, 1.0, 1.5, 1.5])


async def test_restart_intensity_exceeded_makes_the_supervisor_give_up(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    with pytest.RaisesGroup(
        pytest.RaisesExc(actors.SupervisorGaveUp, match="more than 2 restarts in 10 s")
    ) as caught:
        async with actors.open_system(max_restarts=2, within=10, backoff=NO_BACKOFF) as system:
            ref = await system.start(spec("w", journal))
            for _ in range(3):
                ref.tell_nowait("crash")
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep_forever()  # the give-up cancels the block
    gave_up = caught.value.exceptions[0]
    assert isinstance(gave_up.__cause__, Crash)
    assert journal.of("start") == ["w", "w", "w"]


async def test_restarts_outside_the_window_do_not_count(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system(max_restarts=2, within=10, backoff=NO_BACKOFF) as system:
        ref = await system.start(spec("w", journal))
        for _ in range(6):
            await ref.send("crash")
            await trio.sleep(6)  # two restarts are never within 10 s of a third
        assert await ref.ask("incarnation") == 6


async def test_a_supervisor_that_gives_up_is_restarted_by_its_own_supervisor(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    inner = SupervisorSpec("inner", [spec("w", journal)], max_restarts=1, backoff=NO_BACKOFF)
    outer = SupervisorSpec("outer", [inner, spec("peer", journal)], backoff=NO_BACKOFF)
    async with actors.open_system() as system:
        outer_ref = await system.start(outer)
        inner_ref = outer_ref.whereis("inner")
        assert isinstance(inner_ref, actors.SupervisorRef)
        w = inner_ref.whereis("w")
        assert isinstance(w, actors.ActorRef)
        await crash_and_settle(w)  # inner restarts w once
        await crash_and_settle(w)  # second crash: inner gives up, outer restarts inner
        assert journal.of("start") == ["w", "peer", "w", "w"]
        # The grandchild's ref still works: the restarted inner reuses its cell.
        assert await w.ask("count") == 0
        assert outer_ref.whereis("inner") is inner_ref
        assert inner_ref.whereis("w") is w
        # one-for-one at the outer level: the peer was never touched.
        assert journal.of("start").count("peer") == 1


async def test_a_failing_restart_counts_toward_intensity(autojump_clock: MockClock) -> None:
    journal = Journal()
    attempts = 0

    class FailsAfterFirstStart(actors.Actor[object]):
        async def started(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                raise Crash("cannot start again")

        async def receive(self, message: object) -> object:
            raise Crash("crash")

    with pytest.RaisesGroup(actors.SupervisorGaveUp):
        async with actors.open_system(max_restarts=3, backoff=NO_BACKOFF) as system:
            ref = await system.spawn(FailsAfterFirstStart)
            ref.tell_nowait("go")
            await trio.sleep_forever()
    assert attempts == 4  # the first start, then three failed restarts before giving up
    assert journal.entries == []


async def test_cancellation_is_never_swallowed(autojump_clock: MockClock) -> None:
    journal = Journal()
    with trio.move_on_after(5) as scope:
        async with actors.open_system() as system:
            await system.start(spec("w", journal, stop_delay=100))
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == pytest.approx(5)


async def test_keyboard_interrupt_in_an_actor_is_never_swallowed(
    autojump_clock: MockClock,
) -> None:
    class Interrupted(actors.Actor[object]):
        async def receive(self, message: object) -> object:
            raise KeyboardInterrupt

    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        async with actors.open_system() as system:
            ref = await system.spawn(Interrupted)
            ref.tell_nowait("go")
            await trio.sleep_forever()


# --------------------------------------------------------------------------------------
# Restart intensity is reachable: a child that keeps failing makes its supervisor give
# up, in the time the backoff takes, however the failures come.
# --------------------------------------------------------------------------------------


class FailsToRestart(actors.Actor[object]):
    """Starts once; crashes on its first message; every later start-up fails."""

    starts = 0

    async def started(self) -> None:
        FailsToRestart.starts += 1
        if FailsToRestart.starts > 1:
            raise Crash("cannot start again")

    async def receive(self, message: object) -> object:
        raise Crash("crash")


class CrashesAtOnce(actors.Actor[object]):
    """Crashes as soon as it is up, every time."""

    async def started(self) -> None:
        self.context.ref.tell_nowait("crash")

    async def receive(self, message: object) -> object:
        raise Crash("crash")


@pytest.mark.parametrize("factory", [FailsToRestart, CrashesAtOnce])
async def test_a_child_failing_in_a_loop_makes_its_supervisor_give_up_in_bounded_time(
    autojump_clock: MockClock, factory: type[actors.Actor[object]]
) -> None:
    FailsToRestart.starts = 0
    sup = SupervisorSpec("sup", max_restarts=10, within=30)  # the default backoff
    assert sup.gives_up_after == pytest.approx(26.3)  # 0.1 doubling to 5, ten times
    start = trio.current_time()
    with pytest.RaisesGroup(
        pytest.RaisesExc(actors.SupervisorGaveUp, match="child 'sup'")
    ) as caught:
        async with actors.open_system(max_restarts=0) as system:
            ref = await system.start(sup)
            child = await ref.start_child(actors.ActorSpec("child", factory))
            child.tell_nowait("go")
            with trio.fail_after(60):
                await trio.sleep_forever()
    gave_up = caught.value.exceptions[0].__cause__
    assert isinstance(gave_up, actors.SupervisorGaveUp) and gave_up.key == "child"
    assert trio.current_time() - start == pytest.approx(26.3)


async def test_restarts_of_different_children_count_together_without_waiting_in_turn(
    autojump_clock: MockClock,
) -> None:
    """The backoff is a timer per restart, not a sleep in the loop: eleven children that
    crash together exceed ten restarts at once."""
    journal = Journal()
    backoff = RestartBackoff(initial=1, factor=1, maximum=1)
    with pytest.RaisesGroup(actors.SupervisorGaveUp):
        async with actors.open_system(max_restarts=10, within=30, backoff=backoff) as system:
            refs = [await system.start(spec(f"w{n}", journal)) for n in range(11)]
            start = trio.current_time()
            for ref in refs:
                ref.tell_nowait("crash")
            with trio.fail_after(60):
                await trio.sleep_forever()
    assert trio.current_time() == start


def test_an_intensity_the_backoff_keeps_out_of_reach_is_refused() -> None:
    with pytest.raises(ValueError, match="restart intensity out of reach"):
        SupervisorSpec("s", max_restarts=20, within=10)  # 76.3 s of backoff: never
    with pytest.raises(ValueError, match="restart intensity out of reach"):
        SupervisorSpec("s", backoff=RestartBackoff(initial=30, factor=1, maximum=30))
    assert SupervisorSpec("s", max_restarts=0).gives_up_after == 0
    assert SupervisorSpec("s", max_restarts=20, within=10, backoff=NO_BACKOFF).gives_up_after == 0


class _SlowToRestart(actors.Actor[object]):
    async def started(self) -> None:
        if self.context.incarnation > 0:
            await trio.sleep(10)  # a slow restart (a space loading)

    async def receive(self, message: object) -> object:
        if message == "crash":
            raise RuntimeError("crash")
        return "first"


class _Second(actors.Actor[object]):
    async def receive(self, message: object) -> object:
        return "second"


async def test_stopping_a_group_restarts_first_member_lets_the_others_start(
    autojump_clock: MockClock,
) -> None:
    """Rest-for-one: the first restarts slowly and the second waits to follow it. The
    first is stopped for good meanwhile: the second must still start, not stay listed
    and never run."""
    first = actors.ActorSpec("first", _SlowToRestart)
    second = actors.ActorSpec("second", _Second)
    async with actors.open_system(
        "root", children=[first, second], strategy=Strategy.REST_FOR_ONE, within=60
    ) as system:
        first_ref, second_ref = system.whereis("first"), system.whereis("second")
        assert isinstance(first_ref, actors.ActorRef)
        assert isinstance(second_ref, actors.ActorRef)
        first_ref.tell_nowait("crash")
        await trio.sleep(1)  # the backoff is over: the first's slow restart is under way
        await system.root.stop_child("first")
        with trio.fail_after(5):
            assert await second_ref.ask("hi") == "second"
        assert system.root.children() == ["second"]


async def test_on_restart_hears_each_restart_with_the_child_and_its_cause(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    heard: list[tuple[str, str]] = []

    def on_restart(name: str, cause: Exception | None) -> None:
        heard.append((name, repr(cause)))
        if name.endswith("/c"):
            raise RuntimeError("a broken hook")  # logged; supervision goes on

    tree = SupervisorSpec(
        "sup", three(journal), strategy=Strategy.REST_FOR_ONE, backoff=NO_BACKOFF,
        on_restart=on_restart,
    )  # fmt: skip
    with trio.fail_after(5):
        async with actors.open_system("sys", on_restart=on_restart) as system:
            sup = await system.start(tree)
            b, c = sup.whereis("b"), sup.whereis("c")
            assert isinstance(b, actors.ActorRef) and isinstance(c, actors.ActorRef)
            await crash_and_settle(b)  # c restarts with it: one restart, of b
            await crash_and_settle(c)
            assert await c.ask("incarnation") == 2
    assert heard == [("sys/sup/b", "Crash('b')"), ("sys/sup/c", "Crash('c')")]
