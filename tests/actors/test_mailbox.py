"""Mailboxes: bounded, backpressure on send, statistics, and refusal once stopped.

All of them run on trio's MockClock with autojump (the ``autojump_clock`` fixture): time
passes only when every task is blocked, so no test sleeps for real.
"""

import itertools

import pytest
import trio
from trio.testing import MockClock

import actors

from .kit import Journal, settle, spec


async def test_tell_nowait_raises_when_full_and_queues_nothing(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, capacity=2))
        # The actor cannot run until we yield, so the mailbox fills up.
        ref.tell_nowait("a")
        ref.tell_nowait("b")
        with pytest.raises(actors.MailboxFull):
            ref.tell_nowait("c")
        assert ref.statistics().queued == 2
        assert await ref.ask("count") == 2
    assert journal.of("got") == ["w", "w"]


async def test_send_waits_for_room_then_delivers_in_order(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, capacity=1))
        ref.tell_nowait(("sleep", 10.0))  # keeps the actor busy for 10 s of mock time
        await settle()  # the actor takes it
        ref.tell_nowait("first")
        sent_at = []

        async def sender() -> None:
            await ref.send("second")
            sent_at.append(trio.current_time())

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.sleep(5)
            stats = ref.statistics()
            assert (stats.queued, stats.waiting_senders) == (1, 1)
            assert sent_at == []  # still held back by the full mailbox
        assert sent_at[0] - start == pytest.approx(10)
        assert await ref.ask("count") == 3
    got = [entry[2] for entry in journal.entries if entry[0] == "got"]
    assert got == ["'first'", "'second'"]


async def test_statistics_count_processed_messages_across_restarts(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, capacity=8))
        for _ in range(3):
            await ref.send("x")
        await ref.send("crash")
        await ref.send("x")
        assert await ref.ask("count") == 1  # the new incarnation saw one "x"
        stats = ref.statistics()
        assert stats.capacity == 8
        assert stats.queued == 0
        assert stats.processed == 5  # 3 + the crash + 1; the ask is counted after it answers
        assert not stats.closed


async def test_sends_to_a_stopped_actor_are_refused(autojump_clock: MockClock) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal))
        await system.root.stop_child("w")
        assert ref.stopped
        with pytest.raises(actors.ActorStopped):
            ref.tell_nowait("x")
        with pytest.raises(actors.ActorStopped):
            await ref.send("x")
        with pytest.raises(actors.ActorStopped):
            await ref.ask("count")


async def test_a_sender_parked_on_a_full_mailbox_is_released_when_the_actor_stops(
    autojump_clock: MockClock,
) -> None:
    journal = Journal()
    async with actors.open_system() as system:
        ref = await system.start(spec("w", journal, capacity=1, on_stop=actors.StopPolicy.REJECT))
        ref.tell_nowait(("sleep", 100.0))
        await settle()
        ref.tell_nowait("queued")
        outcome: list[BaseException] = []

        async def sender() -> None:
            try:
                await ref.send("parked")
            except actors.ActorStopped as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.sleep(1)
            await system.root.stop_child("w")
        assert len(outcome) == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        actors.ActorSpec("w", lambda: None, capacity=0)  # type: ignore[arg-type,return-value]


class Counter(actors.Actor[int]):
    def __init__(self) -> None:
        self.handled = 0

    async def receive(self, message: int) -> None:
        self.handled += 1


async def test_an_actor_takes_waiting_messages_in_bursts_and_yields_between_them(
    autojump_clock: MockClock,
) -> None:
    """Not a scheduler pass per message (a queue of small messages would crawl behind
    a busy loop), but never more than BURST messages without one."""
    from actors._actor import BURST

    counter = Counter()
    seen: list[int] = []
    async with actors.open_system() as system:
        ref = await system.spawn(lambda: counter, capacity=1000)
        for n in range(1000):
            ref.tell_nowait(n)
        while counter.handled < 1000:  # one scheduler pass per turn of this loop
            seen.append(counter.handled)
            await trio.lowlevel.checkpoint()
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    # A turn is the message waited for plus up to BURST more; trio runs each task once
    # per pass, in a shuffled order, so between two looks the actor can have had two.
    assert max(gaps) <= 2 * (BURST + 1)
    assert len(seen) < 1000 / 4  # far fewer passes than messages


# --------------------------------------------------------------------------------------
# Fairness: senders waiting for room are served first come, first served, as trio's
# memory channels serve them: the slot a receive frees goes to the first parked sender.
# --------------------------------------------------------------------------------------


async def test_a_freed_slot_goes_to_the_first_parked_sender_not_to_a_tell_nowait(
    autojump_clock: MockClock,
) -> None:
    from actors._mailbox import Mailbox

    mailbox = Mailbox("m", 1)
    mailbox.put_nowait("queued")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.put, "parked")
        await settle()
        assert mailbox.statistics().waiting_senders == 1
        assert mailbox.get_nowait() == "queued"
        # The parked sender has not run yet, but the slot is already its own.
        with pytest.raises(actors.MailboxFull):
            mailbox.put_nowait("jumps the queue")
        assert mailbox.get_nowait() == "parked"
    assert mailbox.statistics().waiting_senders == 0


async def test_parked_senders_are_served_in_arrival_order(autojump_clock: MockClock) -> None:
    from actors._mailbox import Mailbox

    mailbox = Mailbox("m", 1)
    mailbox.put_nowait(0)
    async with trio.open_nursery() as nursery:
        for n in range(1, 6):
            nursery.start_soon(mailbox.put, n)
            await settle()  # parked in this order
        got = []
        for _ in range(5):
            got.append(mailbox.get_nowait())
            with pytest.raises(actors.MailboxFull):
                mailbox.put_nowait("late")  # never ahead of those waiting
            await settle()
        got.append(mailbox.get_nowait())
    assert got == [0, 1, 2, 3, 4, 5]


async def test_a_sender_cancelled_while_parked_takes_its_message_back(
    autojump_clock: MockClock,
) -> None:
    from actors._mailbox import Mailbox

    mailbox = Mailbox("m", 1)
    mailbox.put_nowait("queued")
    with trio.move_on_after(1):
        await mailbox.put("given up")
    assert mailbox.statistics().waiting_senders == 0
    assert mailbox.get_nowait() == "queued"
    with pytest.raises(trio.WouldBlock):
        mailbox.get_nowait()
