"""Systems: no shared state between two of them, per-actor timers, background tasks.

Every test runs on trio's MockClock with autojump.
"""

import math

import pytest
import trio
from trio.testing import MockClock

import actors

from .kit import Crash, Journal, spec


async def test_two_systems_in_one_process_do_not_see_each_other(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system("one") as one, actors.open_system("two") as two:
        a = await one.start(spec("w", journal))
        b = await two.start(spec("w", journal))  # same key, other system: no clash
        assert a is not b
        a.tell_nowait("x")
        assert await a.ask("count") == 1
        assert await b.ask("count") == 0
        assert a.name == "one/w" and b.name == "two/w"
        await one.stop()
        assert a.stopped and not b.stopped
        assert two.whereis("w") is b


class Timer(actors.Actor[object]):
    """Keeps a heap of deadlines with one timer, the way a space keeps lease deadlines."""

    def __init__(self, fired: list[tuple[str, float]]) -> None:
        self.fired = fired
        self.deadlines: list[tuple[float, str]] = []

    def wakeup_at(self) -> float:
        return min(self.deadlines, default=(math.inf, ""))[0]

    async def wakeup(self) -> None:
        now = trio.current_time()
        due = [entry for entry in self.deadlines if entry[0] <= now]
        for entry in sorted(due):
            self.deadlines.remove(entry)
            self.fired.append((entry[1], now))

    async def receive(self, message: object) -> object:
        match message:
            case (str(name), float(delay)):
                self.deadlines.append((trio.current_time() + delay, name))
            case "pending":
                return len(self.deadlines)
        return None


async def test_wakeup_fires_at_each_deadline_while_messages_keep_flowing(
    autojump_clock: MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: Timer(fired))
        start = trio.current_time()
        await ref.send(("late", 30.0))
        await ref.send(("early", 10.0))
        await trio.sleep(5)
        await ref.send(("middle", 15.0))  # due at 20
        await trio.sleep(40)
        assert await ref.ask("pending") == 0
    assert [(name, round(at - start, 6)) for name, at in fired] == [
        ("early", 10.0),
        ("middle", 20.0),
        ("late", 30.0),
    ]


async def test_a_failing_background_task_crashes_the_incarnation(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()

    class Background(actors.Actor[object]):
        async def started(self) -> None:
            journal.add("start", str(self.context.incarnation))

        async def receive(self, message: object) -> object:
            if message == "spawn":
                self.context.nursery.start_soon(self.fail_later)
            return self.context.incarnation

        async def fail_later(self) -> None:
            await trio.sleep(1)
            raise Crash("background task failed")

    async with actors.open_system() as system:
        ref = await system.spawn(Background)
        assert await ref.ask("spawn") == 0
        await trio.sleep(2)
        assert await ref.ask("which") == 1
    assert journal.of("start") == ["0", "1"]


async def test_open_system_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        async with actors.open_system(max_restarts=-1):
            pass
    with pytest.raises(ValueError, match="backoff factor"):
        actors.RestartBackoff(factor=0.5)
    with pytest.raises(ValueError, match="child keys must be unique"):
        actors.SupervisorSpec("s", [spec("a", Journal()), spec("a", Journal())])


# --------------------------------------------------------------------------------------
# Timers never starve the mailbox: timer work and mailbox work take turns, so a deadline
# that stays in the past cannot keep an actor from reading its messages or a stop.
# --------------------------------------------------------------------------------------


class Starved(Exception):
    """Raised by `Stubborn` once its timer has run so often that the mailbox is surely
    starved: a failing test instead of a hang (the spinning loop keeps the autojump
    clock from ever moving)."""


class Stubborn(actors.Actor[object]):
    """Its deadline, once armed, stays in the past: ``wakeup`` never consumes it (as a
    space whose store failed leaves its due deadlines for the incarnation after it)."""

    def __init__(self) -> None:
        self.due = math.inf
        self.wakeups = 0

    def wakeup_at(self) -> float:
        return self.due

    async def wakeup(self) -> None:
        self.wakeups += 1
        if self.wakeups > 10_000:
            raise Starved("the timer ran 10,000 times and the mailbox was never read")

    async def receive(self, message: object) -> object:
        match message:
            case "arm":
                self.due = trio.current_time()
            case "wakeups":
                return self.wakeups
            case "incarnation":
                return self.context.incarnation
        return None


async def test_a_deadline_that_stays_due_does_not_starve_asks_or_a_stop(
    autojump_clock: MockClock,
) -> None:
    async with actors.open_system(max_restarts=0) as system:
        ref = await system.spawn(Stubborn, shutdown=30)
        ref.tell_nowait("arm")
        with trio.fail_after(1):
            for _ in range(10):
                assert await ref.ask("wakeups") < 100  # a turn each, not a spin
        start = trio.current_time()
        with trio.fail_after(1):  # its grace is 30 s: read at once, not waited out
            await system.root.stop_child(ref.key)
        assert trio.current_time() == start
    assert ref.stopped


async def test_a_restart_stop_reaches_an_actor_whose_deadline_stays_due(
    autojump_clock: MockClock,
) -> None:
    """The stop of a group restart travels in the control lane: read after one timer
    turn, not after the grace period."""
    journal = Journal()
    tree = actors.SupervisorSpec(
        "sup",
        [actors.ActorSpec("stubborn", Stubborn, shutdown=30), spec("w", journal)],
        strategy=actors.Strategy.ONE_FOR_ALL,
        max_restarts=1,  # the crash below; a `Starved` crash would be one too many
        backoff=actors.RestartBackoff(initial=0, factor=1, maximum=0),
    )
    async with actors.open_system(max_restarts=0) as system:
        sup = await system.start(tree)
        stubborn, w = sup.whereis("stubborn"), sup.whereis("w")
        assert isinstance(stubborn, actors.ActorRef) and isinstance(w, actors.ActorRef)
        stubborn.tell_nowait("arm")
        with trio.fail_after(1):
            assert await stubborn.ask("incarnation") == 0  # armed: its deadline stays due
        start = trio.current_time()
        w.tell_nowait("crash")  # one-for-all: stubborn is stopped and restarted too
        with trio.fail_after(1):
            while await stubborn.ask("incarnation") == 0:
                pass  # until the group restart has replaced it
        assert trio.current_time() == start
        assert await stubborn.ask("incarnation") == 1
        assert not sup.stopped


class Backlog(actors.Actor[object]):
    """A backlog of due deadlines, each slow to handle (one second of work apiece)."""

    def __init__(self) -> None:
        self.deadlines = [0.0] * 100

    def wakeup_at(self) -> float:
        return self.deadlines[0] if self.deadlines else math.inf

    async def wakeup(self) -> None:
        self.deadlines.pop()
        await trio.sleep(1)

    async def receive(self, message: object) -> object:
        return len(self.deadlines)


async def test_asks_are_answered_between_the_turns_of_a_timer_backlog(
    autojump_clock: MockClock,
) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Backlog)
        with trio.fail_after(5):  # the whole backlog would take 100 s
            left = await ref.ask("left", timeout=None)
            assert left > 95
            assert await ref.ask("left", timeout=None) == left - 1
