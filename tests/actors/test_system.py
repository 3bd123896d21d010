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
