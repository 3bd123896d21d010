"""Request/reply: answers, errors to the caller, timeouts, deferred replies, stopped actors.

Every test runs on trio's MockClock with autojump, so timeouts cost no real time.
"""

from dataclasses import dataclass

import pytest
import trio
from trio.testing import MockClock

import actors

from .kit import Crash, Journal, spec


@dataclass(frozen=True)
class Add(actors.Request[int]):
    amount: int


@dataclass(frozen=True)
class Later(actors.Request[str]):
    """Answered only when a `Release` arrives: the reply is deferred."""

    tag: str


@dataclass(frozen=True)
class Release:
    tag: str


class Deferring(actors.Actor[object]):
    def __init__(self) -> None:
        self.total = 0
        self.waiting: dict[str, actors.Reply] = {}

    async def receive(self, message: object) -> object:
        match message:
            case Add(amount):
                self.total += amount
                return self.total
            case Later(tag):
                self.waiting[tag] = self.context.defer()
            case Release(tag):
                self.waiting.pop(tag).set(f"released {tag}")
            case "crash":
                raise Crash("deferring actor crashed")
        return None


async def test_ask_returns_the_answer(autojump_clock: MockClock) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring)
        assert await ref.ask(Add(2)) == 2
        assert await ref.ask(Add(3)) == 5


async def test_ask_raises_the_actors_exception_and_the_actor_lives_on(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        await ref.send("x")
        with pytest.raises(Crash, match="w failed the ask"):
            await ref.ask("fail")
        # Same incarnation, same state: an ask error is the caller's to handle.
        assert await ref.ask("count") == 1
        assert await ref.ask("incarnation") == 0
    assert journal.of("start") == ["w"]


async def test_ask_times_out_with_a_clear_error(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait(("sleep", 60.0))
        start = trio.current_time()
        with pytest.raises(actors.AskTimeout, match=r"system/w did not reply within 1.5 s"):
            await ref.ask("count", timeout=1.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        # AskTimeout is also a TimeoutError, for callers that catch the builtin.
        assert issubclass(actors.AskTimeout, TimeoutError)
        # The message was still queued, and is processed later; the late answer is dropped.
        assert await ref.ask("count", timeout=None) == 1


async def test_ask_timeout_includes_waiting_for_mailbox_room(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, capacity=1))
        ref.tell_nowait(("sleep", 60.0))
        await trio.testing.wait_all_tasks_blocked()
        ref.tell_nowait("fills the mailbox")
        with pytest.raises(actors.AskTimeout):
            await ref.ask("count", timeout=2)
        assert ref.statistics().waiting_senders == 0


async def test_ask_to_a_stopped_actor_fails_at_once(autojump_clock: MockClock) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, key="d")
        await system.root.stop_child("d")
        start = trio.current_time()
        with pytest.raises(actors.ActorStopped, match="system/d is stopped"):
            await ref.ask(Add(1), timeout=None)
        assert trio.current_time() == start


async def test_deferred_reply_is_answered_later(autojump_clock: MockClock) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring)
        answers: list[str] = []

        async def ask_later() -> None:
            answers.append(await ref.ask(Later("a")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_later)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []
            # The actor keeps serving others while the reply is pending.
            assert await ref.ask(Add(1)) == 1
            await ref.send(Release("a"))
        assert answers == ["released a"]


async def test_pending_asks_fail_when_the_actor_stops_never_hang(
    autojump_clock: MockClock,
) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, key="d", on_stop=actors.StopPolicy.REJECT)
        errors: list[BaseException] = []

        async def ask(message: object) -> None:
            try:
                await ref.ask(message, timeout=None)
            except actors.ActorStopped as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, Later("held by the actor"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(system.root.stop_child, "d")
            await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 1
        assert "system/d is stopped" in str(errors[0])


async def test_a_deferred_ask_fails_with_actor_crashed_when_the_actor_crashes(
    autojump_clock: MockClock,
) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring, key="d")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                failures: list[BaseException] = []

                async def ask() -> None:
                    try:
                        await ref.ask(Later("x"), timeout=None)
                    except actors.ActorCrashed as exc:
                        failures.append(exc)

                nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                ref.tell_nowait("crash")
        [failure] = failures
        assert isinstance(failure.__cause__, Crash)
        # The actor was restarted behind the same ref.
        assert await ref.ask(Add(5)) == 5


async def test_a_tell_that_raises_crashes_the_actor_and_it_is_restarted(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        await ref.send("x")
        await ref.send("crash")
        assert await ref.ask("count") == 0
        assert await ref.ask("incarnation") == 1
    assert journal.of("start") == ["w", "w"]


async def test_answered_asks_do_not_pile_up_in_the_timeout_heap(
    autojump_clock: MockClock,
) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring)
        for _ in range(10_000):
            await ref.ask(Add(1), timeout=60)
        # Internal check: stale entries are compacted once they are the majority.
        assert len(ref._timer) <= 2048


async def test_a_cancelled_ask_abandons_its_reply(autojump_clock: MockClock) -> None:
    async with actors.open_system() as system:
        ref = await system.spawn(Deferring)
        with trio.move_on_after(1) as scope:
            await ref.ask(Later("never released"), timeout=30)
        assert scope.cancelled_caught
        await trio.sleep(60)  # the ask's own deadline passes with nobody waiting
        assert await ref.ask(Add(1)) == 1


# --------------------------------------------------------------------------------------
# An ask that can no longer be answered is not delivered: its caller is gone.
# --------------------------------------------------------------------------------------


async def test_an_ask_whose_caller_is_already_cancelled_is_not_delivered(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait(("sleep", 10.0))
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await ref.ask("nobody waits for this", timeout=None)
        assert await ref.ask("count", timeout=None) == 1  # the sleep only
    assert journal.of("got") == []


async def test_an_ask_that_timed_out_in_the_mailbox_is_not_delivered(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        ref.tell_nowait(("sleep", 10.0))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(actors.AskTimeout):
            await ref.ask("too late", timeout=1)
        with trio.move_on_after(2):
            await ref.ask("given up", timeout=None)
        assert await ref.ask("count", timeout=None) == 1
        assert ref.statistics().processed == 4  # the skipped asks count as handled
    assert journal.of("got") == []


async def test_an_ask_that_times_out_while_being_handled_is_still_processed(
    autojump_clock: MockClock,
) -> None:
    """The documented other side: once the actor has the message, a timeout only stops
    the caller waiting."""
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        with pytest.raises(actors.AskTimeout):
            await ref.ask(("sleep", 10.0), timeout=1)
        assert await ref.ask("count", timeout=None) == 1


async def test_an_answer_given_before_the_wait_reaches_a_cancelled_caller() -> None:
    """The actor answered (and acted on the answer being delivered) before the asker
    waited: a cancellation pending at that moment must not lose it."""
    from actors._reply import ReplySlot

    slot = ReplySlot()
    slot.set("jobs")
    got = None
    with trio.CancelScope() as scope:
        scope.cancel()
        got = await slot.wait()
        await trio.lowlevel.checkpoint()  # the cancellation still comes, right after
        pytest.fail("the cancellation was lost")
    assert got == "jobs"
