"""Edge cases of the actor runtime, found in review: stale control messages, a system
that dies without stop(), stops racing restarts and slow start-ups, asks whose actor
goes away, and errors that must describe what really happened. Each section names the
behaviour it guards.

Every test runs on trio's MockClock with autojump: hangs show up as `trio.TooSlowError`
from a `fail_after` guard, never as a stuck test run.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import trio
from trio.testing import MockClock

import actors
from actors import Restart, RestartBackoff, StopPolicy, Strategy, SupervisorSpec

from .kit import Crash, Journal, settle, spec

NO_BACKOFF = RestartBackoff(initial=0, factor=1, maximum=0)


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): a STOP control message left behind in a child's mailbox is read by its next
# incarnation, which then exits "normally" at once.
# --------------------------------------------------------------------------------------


async def test_child_cancelled_after_its_grace_in_a_group_restart_is_restarted_not_removed(
    autojump_clock: MockClock,
) -> None:
    """b crashes; one-for-all stops a, which overruns its 1 s grace and is cancelled
    before it read the STOP put in its mailbox. a's next incarnation reads that stale
    STOP first, exits normally, and -- a transient child -- is removed for good."""
    journal = Journal()
    tree = SupervisorSpec(
        "sup",
        [
            spec("a", journal, restart=Restart.TRANSIENT, shutdown=1),
            spec("b", journal),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=NO_BACKOFF,
    )
    async with actors.open_system() as system:
        sup = await system.start(tree)
        a, b = sup.whereis("a"), sup.whereis("b")
        assert isinstance(a, actors.ActorRef) and isinstance(b, actors.ActorRef)
        a.tell_nowait(("sleep", 60.0))  # busy past its grace when the group restarts
        await settle()
        b.tell_nowait("crash")
        await trio.sleep(5)
        assert journal.of("start") == ["a", "b", "a", "b"]
        assert not a.stopped, "a crashed-group member was removed instead of restarted"
        assert sup.whereis("a") is a
        assert await a.ask("incarnation") == 1


async def test_two_children_crashing_together_cost_one_group_restart(
    autojump_clock: MockClock,
) -> None:
    """a and b crash in the same instant. Handling b's exit, one-for-all 'stops' a,
    which is already dead: the STOP stays queued, a's new incarnation reads it and exits,
    and that bogus normal exit is one restart too many: the supervisor gives up."""
    journal = Journal()
    tree = SupervisorSpec(
        "sup",
        [spec("a", journal), spec("b", journal)],
        strategy=Strategy.ONE_FOR_ALL,
        max_restarts=1,
        backoff=NO_BACKOFF,
    )
    async with actors.open_system(max_restarts=0) as system:
        sup = await system.start(tree)
        a, b = sup.whereis("a"), sup.whereis("b")
        assert isinstance(a, actors.ActorRef) and isinstance(b, actors.ActorRef)
        b.tell_nowait("crash")
        a.tell_nowait("crash")
        await trio.sleep(1)
        # One group restart: both at incarnation 1, nothing else started.
        assert journal.of("start") == ["a", "b", "a", "b"]
        assert await a.ask("incarnation") == 1
        assert await b.ask("incarnation") == 1


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): when the system ends other than by system.stop() (the root gives up, or the
# block is left by an exception), no mailbox is closed and the ask timer is gone: an ask
# through a surviving ref hangs forever, even with a timeout, and tells vanish.
# --------------------------------------------------------------------------------------


async def test_ask_after_the_root_gave_up_fails_instead_of_hanging(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    refs: list[actors.ActorRef[object] | actors.SupervisorRef | None] = []
    children = [spec("peer", journal), spec("crasher", journal)]
    with pytest.RaisesGroup(actors.SupervisorGaveUp):
        async with actors.open_system(children=children, max_restarts=0) as system:
            refs.append(system.whereis("peer"))  # a static child: never finalized
            crasher = system.whereis("crasher")
            assert isinstance(crasher, actors.ActorRef)
            crasher.tell_nowait("crash")
            await trio.sleep_forever()
    [peer] = refs
    assert isinstance(peer, actors.ActorRef)
    with trio.fail_after(60):  # the ask's own 1 s timeout never fires: the timer is gone
        with pytest.raises(actors.ActorStopped):
            await peer.ask("count", timeout=1)
    assert peer.stopped, "the system is gone but its ref says otherwise"


async def test_tell_after_the_system_block_failed_is_refused(autojump_clock: MockClock) -> None:
    journal = Journal()
    refs: list[actors.ActorRef[object]] = []
    with pytest.RaisesGroup(Crash, allow_unwrapped=True):
        async with actors.open_system() as system:
            refs.append(await system.start(spec("w", journal)))
            raise Crash("the program using the system failed")
    [ref] = refs
    with pytest.raises(actors.ActorStopped):
        ref.tell_nowait("lost without a trace")


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): a supervisor retrying a child whose restart keeps failing never reads its
# mailbox, so a stop request waits forever when the backoff keeps it under intensity. (Such
# settings are refused now, see test_supervision.py; the retries are timer messages, so a
# stop is read at once while they go on.)
# --------------------------------------------------------------------------------------


async def test_stop_is_honoured_at_once_while_a_restart_keeps_failing(
    autojump_clock: MockClock,
) -> None:
    attempts = 0

    class FailsAfterFirstStart(actors.Actor[object]):
        async def started(self) -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                raise Crash("database is down")

        async def receive(self, message: object) -> object:
            raise Crash("crash")

    with pytest.raises(ValueError, match="out of reach"):
        # 10 restarts in 5 s with the default backoff (0.1 s doubling to 5 s): the
        # supervisor would never give up on the failing restart.
        actors.SupervisorSpec("system", max_restarts=10, within=5)
    async with actors.open_system(max_restarts=10, within=30) as system:  # gives up at 26.3 s
        ref = await system.spawn(FailsAfterFirstStart)
        ref.tell_nowait("go")
        await trio.sleep(10)  # the restart has been failing for a while
        assert attempts == 7  # at 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s: each one counted
        start = trio.current_time()
        with trio.fail_after(1):
            await system.stop()
        assert trio.current_time() == start
    assert ref.stopped


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): a dynamic child of a supervisor that is cancelled after its grace keeps its
# queued asks forever: `finalize` only visits the supervisor's static cells.
# --------------------------------------------------------------------------------------


async def test_queued_ask_to_a_dynamic_grandchild_fails_when_its_supervisor_is_cancelled(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        sub = await system.start(SupervisorSpec("sub", shutdown=1))
        dyn = await sub.start_child(spec("dyn", journal, shutdown=10))
        dyn.tell_nowait(("sleep", 100.0))  # busy: the drain outlasts sub's grace
        await settle()
        outcome: list[BaseException] = []
        answered = trio.Event()

        async def ask() -> None:
            try:
                await dyn.ask("count", timeout=None)
            except actors.ActorStopped as exc:
                outcome.append(exc)
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await settle()
            await system.root.stop_child("sub")  # sub is cancelled after 1 s
            with trio.fail_after(60):
                await answered.wait()
        assert dyn.stopped
        assert len(outcome) == 1


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): a supervisor request being handled when its supervisor is cancelled is never
# answered: only queued requests are rejected, the one in progress is forgotten.
# --------------------------------------------------------------------------------------


async def test_start_child_in_progress_when_its_supervisor_is_cancelled_does_not_hang(
    autojump_clock: MockClock,
) -> None:
    class SlowStart(actors.Actor[object]):
        async def started(self) -> None:
            await trio.sleep(10)  # a slow but finite start-up (a database connect)

        async def receive(self, message: object) -> object:
            return None

    async with actors.open_system() as system:
        sub = await system.start(SupervisorSpec("sub", shutdown=1))
        outcome: list[BaseException] = []
        answered = trio.Event()

        async def start() -> None:
            try:
                await sub.start_child(actors.ActorSpec("slow", SlowStart))
            except actors.ActorError as exc:
                outcome.append(exc)
            answered.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(start)
            await settle()
            await system.root.stop_child("sub")  # sub overruns its 1 s grace: cancelled
            with trio.fail_after(60):  # start_child's default timeout is None
                await answered.wait()
        assert isinstance(outcome[0], actors.ActorStopped | actors.ChildStartFailed)


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): nothing bounds a child's start-up, and the supervisor reads no request while
# one runs: a started() that never returns makes system.stop() wait forever.
# --------------------------------------------------------------------------------------


async def test_stop_is_not_blocked_forever_by_a_child_stuck_in_started(
    autojump_clock: MockClock,
) -> None:
    class Stuck(actors.Actor[object]):
        async def started(self) -> None:
            await trio.sleep_forever()  # e.g. a connect without a timeout

        async def receive(self, message: object) -> object:
            return None

    async with actors.open_system() as system:
        outcome: list[BaseException] = []

        async def spawn() -> None:
            try:
                await system.spawn(Stuck, shutdown=1)
            except actors.ActorError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(spawn)
            await settle()
            with trio.fail_after(60):  # the child's grace is 1 s
                await system.stop()
        assert len(outcome) == 1


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): errors that describe the wrong thing.
# --------------------------------------------------------------------------------------


async def test_deferred_ask_gets_actor_crashed_when_a_background_task_crashes_the_actor(
    autojump_clock: MockClock,
) -> None:
    """The docs: if the incarnation ends by a crash, a deferred asker gets ActorCrashed
    with the crash as __cause__. A background-task crash reaches run_actor as Cancelled,
    so `crash` is None and the asker is told the actor is 'stopped' -- for good, per
    ActorStopped's contract -- while it is in fact being restarted."""

    class Deferring(actors.Actor[object]):
        def __init__(self) -> None:
            self.held: list[actors.Reply] = []

        async def receive(self, message: object) -> object:
            if message == "hold":
                self.held.append(self.context.defer())
                self.context.nursery.start_soon(self.fail_soon)
            return self.context.incarnation

        async def fail_soon(self) -> None:
            await trio.sleep(1)
            raise Crash("background task failed")

    async with actors.open_system(backoff=NO_BACKOFF) as system:
        ref = await system.spawn(Deferring)
        error: BaseException | None = None
        try:
            await ref.ask("hold", timeout=10)
        except actors.ActorError as exc:
            error = exc
        assert not ref.stopped
        assert await ref.ask("which") == 1  # restarted: it was a crash, not a stop
        assert isinstance(error, actors.ActorCrashed), repr(error)
        assert isinstance(error.__cause__, Crash)


async def test_a_crash_in_stopped_reaches_the_supervisor_unwrapped(
    autojump_clock: MockClock,
) -> None:
    """An exception from stopped() leaves run_actor wrapped in an ExceptionGroup by the
    incarnation's nursery (a crash from receive does not), so SupervisorGaveUp's
    __cause__ -- 'the last child failure' -- is an opaque group."""

    class BadStop(actors.Actor[object]):
        async def receive(self, message: object) -> object:
            self.context.stop()
            return None

        async def stopped(self) -> None:
            raise Crash("could not flush")

    with pytest.RaisesGroup(actors.SupervisorGaveUp) as caught:
        async with actors.open_system(max_restarts=0) as system:
            ref = await system.spawn(BadStop)
            ref.tell_nowait("stop")
            await trio.sleep_forever()
    gave_up = caught.value.exceptions[0]
    assert isinstance(gave_up.__cause__, Crash), repr(gave_up.__cause__)


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): a child is reachable through whereis() while its started() is still running,
# and a failed start leaves refs handed out that way dangling.
# --------------------------------------------------------------------------------------


async def test_a_child_is_not_reachable_before_its_start_up_finished(
    autojump_clock: MockClock,
) -> None:
    release = trio.Event()

    class SlowStart(actors.Actor[object]):
        async def started(self) -> None:
            await release.wait()

        async def receive(self, message: object) -> object:
            return "hello"

    async with actors.open_system() as system, trio.open_nursery() as nursery:
        nursery.start_soon(partial(system.spawn, SlowStart, key="slow"))
        await settle()
        assert system.whereis("slow") is None, "reachable before started() returned"
        assert system.root.children() == []
        release.set()


# --------------------------------------------------------------------------------------
# Guards against this (seen in review): a bad ask timeout is not rejected; it kills the whole system's ask timer.
# --------------------------------------------------------------------------------------


async def test_a_nan_ask_timeout_is_rejected_not_fatal_to_the_system(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait(("sleep", 10.0))
        with pytest.raises(ValueError):
            await ref.ask("count", timeout=math.nan)
        assert await ref.ask("count", timeout=30) == 1


# ======================================================================================
# Edge cases that hold today (passing): keep them so the fixes do not break them.
# ======================================================================================


async def test_stop_during_restart_backoff_completes_within_the_backoff(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    backoff = RestartBackoff(initial=30, factor=1, maximum=30)
    async with actors.open_system(within=100, backoff=backoff) as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait("crash")
        await trio.sleep(10)  # mid-backoff
        start = trio.current_time()
        with trio.fail_after(21):
            await system.stop()
        assert trio.current_time() == start  # the backoff is a timer: nothing to wait for
    assert ref.stopped


async def test_a_supervisor_start_failing_part_way_stops_what_it_started_in_reverse(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()

    class NoStart(actors.Actor[object]):
        async def started(self) -> None:
            raise Crash("no database")

        async def receive(self, message: object) -> object:
            return None

    tree = SupervisorSpec(
        "tree", [spec("a", journal), spec("b", journal), actors.ActorSpec("bad", NoStart)]
    )
    async with actors.open_system() as system:
        with pytest.raises(actors.ChildStartFailed, match="'tree'") as caught:
            await system.start(tree)
        inner = caught.value.__cause__
        assert isinstance(inner, actors.ChildStartFailed) and inner.key == "bad"
        assert isinstance(inner.__cause__, Crash)
        assert journal.of("start") == ["a", "b"]
        assert journal.of("stop") == ["b", "a"]
        assert system.whereis("tree") is None
        # The key is free again and a good tree starts under it.
        sub = await system.start(SupervisorSpec("tree", [spec("a", journal)]))
        assert isinstance(sub.whereis("a"), actors.ActorRef)


async def test_a_short_ask_times_out_while_a_longer_one_is_pending(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait(("sleep", 1000.0))
        await settle()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: ref.ask("count", timeout=500))
            await settle()
            start = trio.current_time()
            with pytest.raises(actors.AskTimeout):
                await ref.ask("count", timeout=2)
            assert trio.current_time() - start == pytest.approx(2)
            nursery.cancel_scope.cancel()


async def test_an_ask_cancelled_while_waiting_for_room_queues_nothing(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, capacity=1))
        ref.tell_nowait(("sleep", 10.0))
        await settle()
        ref.tell_nowait("queued")
        with trio.move_on_after(1):
            await ref.ask("never queued", timeout=None)
        assert ref.statistics().queued == 1
        assert ref.statistics().waiting_senders == 0
        assert await ref.ask("count", timeout=None) == 2
    assert journal.of("got") == ["w"]


async def test_an_ask_in_progress_when_the_grace_runs_out_fails_and_never_hangs(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, shutdown=1, on_stop=StopPolicy.REJECT))
        outcomes: list[BaseException] = []

        async def ask(message: object) -> None:
            try:
                await ref.ask(message, timeout=None)
            except actors.ActorStopped as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ("sleep", 50.0))  # in progress at the stop
            await settle()
            nursery.start_soon(ask, "count")  # queued behind it
            await settle()
            start = trio.current_time()
            await system.root.stop_child("w")
            assert trio.current_time() - start == pytest.approx(1)
        assert len(outcomes) == 2


async def test_keyboard_interrupt_in_started_or_stopped_is_never_swallowed(
    autojump_clock: MockClock,
) -> None:
    class InterruptedStart(actors.Actor[object]):
        async def started(self) -> None:
            raise KeyboardInterrupt

        async def receive(self, message: object) -> object:
            return None

    class InterruptedStop(actors.Actor[object]):
        async def receive(self, message: object) -> object:
            return None

        async def stopped(self) -> None:
            raise KeyboardInterrupt

    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        async with actors.open_system() as system:
            await system.spawn(InterruptedStart)
    with pytest.RaisesGroup(KeyboardInterrupt, flatten_subgroups=True):
        async with actors.open_system() as system:
            await system.spawn(InterruptedStop)


async def test_give_up_cascades_to_the_root_through_a_nested_supervisor(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    inner = SupervisorSpec("inner", [spec("w", journal)], max_restarts=0, backoff=NO_BACKOFF)
    with pytest.RaisesGroup(
        pytest.RaisesExc(actors.SupervisorGaveUp, match="child 'inner'")
    ) as caught:
        async with actors.open_system(max_restarts=0, backoff=NO_BACKOFF) as system:
            sub = await system.start(inner)
            w = sub.whereis("w")
            assert isinstance(w, actors.ActorRef)
            w.tell_nowait("crash")
            await trio.sleep_forever()
    root_gave_up = caught.value.exceptions[0]
    inner_gave_up = root_gave_up.__cause__
    assert isinstance(inner_gave_up, actors.SupervisorGaveUp) and inner_gave_up.key == "w"
    assert isinstance(inner_gave_up.__cause__, Crash)
