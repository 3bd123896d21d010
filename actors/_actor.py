"""Actors, their references, and the loop that runs one incarnation of an actor.

An actor handles one message at a time from its mailbox. ``receive`` returns the answer
to an ask; an exception it raises goes back to the asker (the actor lives on) or, for a
tell, crashes the incarnation so that its supervisor decides what happens next.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, Generic, TypeVar, overload

import trio

from ._mailbox import Mailbox, MailboxClosed, MailboxStatistics
from ._reply import Reply, ReplySlot
from ._spec import ActorSpec, StopPolicy
from ._timer import AskTimer
from .errors import ActorCrashed, ActorStopped, AskTimeout, MailboxFull

M = TypeVar("M")
R = TypeVar("R")

DEFAULT_ASK_TIMEOUT = 5.0


class Request(Generic[R]):
    """Base for messages that are asked: ``R`` is the type of the answer.

    ``await ref.ask(GetCount())`` is then typed as ``R`` for a ``GetCount(Request[int])``.
    """

    __slots__ = ()


class Ask:
    """The envelope of an asked message. Internal."""

    __slots__ = ("message", "slot")

    def __init__(self, message: Any, slot: ReplySlot) -> None:
        self.message = message
        self.slot = slot


class Stop:
    """Control message: end this incarnation now, keep the mailbox. Internal."""

    __slots__ = ()


STOP = Stop()


class ActorRef(Generic[M]):
    """The address of an actor. It outlives incarnations: after a restart, messages sent
    to the same ref reach the new incarnation, and nobody has to look the actor up again.
    """

    __slots__ = ("_mailbox", "_timer", "key", "name")

    def __init__(self, key: Hashable, name: str, mailbox: Mailbox, timer: AskTimer) -> None:
        self.key = key
        self.name = name
        self._mailbox = mailbox
        self._timer = timer

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    @property
    def stopped(self) -> bool:
        """True once the actor is stopped for good: nothing sent to it is delivered."""
        return self._mailbox.closed

    def tell_nowait(self, message: M) -> None:
        """Queue ``message``; `MailboxFull` if there is no room, `ActorStopped` if stopped."""
        self._mailbox.put_nowait(message)

    async def send(self, message: M) -> None:
        """Queue ``message``, waiting while the mailbox is full (backpressure)."""
        await self._mailbox.put(message)

    @overload
    async def ask(self, message: Request[R], *, timeout: float | None = ...) -> R: ...
    @overload
    async def ask(self, message: M, *, timeout: float | None = ...) -> Any: ...

    async def ask(self, message: Any, *, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send ``message`` and wait for the answer.

        The time spent waiting for mailbox room counts against ``timeout`` (seconds on
        trio's clock; ``None`` waits forever). Raises what the actor raised, `AskTimeout`,
        `ActorStopped` if the actor is or becomes stopped, or `ActorCrashed`.

        An ask whose caller gave up (timed out or cancelled) before the actor took it
        from the mailbox is never delivered; one the actor already took may still be
        processed, so a timeout does not say that nothing happened.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"ask timeout must be a number >= 0 or None, not {timeout}")
        slot = ReplySlot()
        envelope = Ask(message, slot)
        mailbox = self._mailbox
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        # With room, skip put()'s own schedule point: waiting for the reply is one, and a
        # trip through the scheduler is a fifth of an ask's cost.
        try:
            mailbox.put_nowait(envelope)
        except MailboxFull:
            with trio.move_on_at(deadline) as waited:
                await mailbox.put(envelope)
            if waited.cancelled_caught:  # nothing was queued
                assert timeout is not None  # only a finite deadline cancels
                raise AskTimeout(self.name, timeout) from None
        if timeout is not None:
            self._timer.watch(slot, deadline, self.name, timeout)
        return await slot.wait()

    def statistics(self) -> MailboxStatistics:
        return self._mailbox.statistics()


class Context(Generic[M]):
    """What an actor incarnation knows about itself: its ref, its nursery, its number."""

    __slots__ = ("_current", "_deferred", "_stop_requested", "incarnation", "nursery", "ref")

    def __init__(self, ref: ActorRef[M], incarnation: int, nursery: trio.Nursery) -> None:
        self.ref = ref
        self.incarnation = incarnation
        """0 for the first start, then one more for each restart."""
        self.nursery = nursery
        """For the incarnation's own background tasks; cancelled when it ends. A task that
        raises crashes the incarnation."""
        self._current: ReplySlot | None = None
        self._deferred: dict[ReplySlot, Reply] = {}
        self._stop_requested = False

    def defer(self) -> Reply:
        """Take over the reply to the ask being handled; answer it later with the `Reply`.

        What ``receive`` then returns is ignored. If the incarnation ends before the reply
        is given, the asker gets `ActorStopped` if the actor is gone for good, else
        `ActorCrashed` (the actor was restarted; after a crash, that is its ``__cause__``).
        """
        slot, self._current = self._current, None
        if slot is None:
            return Reply(None, None)
        reply = Reply(slot, self._deferred)
        self._deferred[slot] = reply
        return reply

    def stop(self) -> None:
        """End this incarnation normally once the current message is handled."""
        self._stop_requested = True


class Actor(Generic[M]):
    """Subclass and implement `receive`. The hooks run inside the incarnation's nursery.

    ``context`` is set before `started` runs.
    """

    context: Context[M]

    async def started(self) -> None:
        """Load state. The actor's ref is handed out only after this returns; if it raises,
        the start fails."""

    async def receive(self, message: M) -> object:
        """Handle one message; for an ask, the return value is the answer."""
        raise NotImplementedError

    async def stopped(self) -> None:
        """Runs when the incarnation ends normally or by a crash (not when cancelled)."""

    def wakeup_at(self) -> float:
        """The trio time at which `wakeup` should run if no message comes first.

        Read before waiting for each message: one timer per actor, however many deadlines
        it tracks. ``math.inf`` (the default) waits for messages only.
        """
        return math.inf

    async def wakeup(self) -> None:
        """Called once the time returned by `wakeup_at` has come."""


class _Nothing:
    __slots__ = ()


_NOTHING = _Nothing()


BURST = 64
BURST_SECONDS = 0.002
"""How long, and for how many messages, an actor may take waiting messages from its
mailbox without yielding to the scheduler.

Taking a waiting message needs no wait, but a trio checkpoint per message costs the
actor a whole scheduler pass each: with a thousand other tasks in the loop (sockets), an
actor of small messages that yields per message serves a few thousand a second at most,
and its queue, and every caller's latency, grows long before its own work fills the
loop (bench/realtime.py: the p99 from a call to its handling fell from 45 to 6 ms). So
an actor takes waiting messages in a row for up to 2 ms (and at most BURST of them),
then checkpoints: the other tasks' turns, and cancellation, are never
further away than that, and an actor of big messages still yields after each, so what
it hands to others (the store writer) is picked up at once."""


async def _serve(actor: Actor[M], mailbox: Mailbox, context: Context[M]) -> None:
    """Hand messages to ``actor`` one at a time until stopped, closed and drained.

    Timer work and mailbox work take turns, as trio's scheduler runs each runnable task
    once a pass: after a ``wakeup``, a message that is waiting (control messages first)
    is handled before the next ``wakeup``. So a deadline that stays in the past (a
    backlog of due work, or an actor that cannot consume it yet) slows the mailbox to
    one message a turn but never keeps a stop, a failure notice or an ask from it.
    """
    receive = actor.receive
    burst, burst_ends = BURST, 0.0
    woke = False
    while not context._stop_requested:
        deadline = actor.wakeup_at()
        now = trio.current_time()
        if now >= deadline and not woke:
            await trio.lowlevel.checkpoint()
            burst = BURST
            await actor.wakeup()
            woke = True
            continue
        item: object = _NOTHING
        if woke or (burst < BURST and now < burst_ends):
            # The mailbox's turn: what is waiting, without a wait (the wakeup's
            # checkpoint, or the burst's, was just had).
            try:
                item = mailbox.get_nowait()
            except trio.WouldBlock:
                pass
            except MailboxClosed:
                return
            else:
                if woke:
                    burst, burst_ends = 0, trio.current_time() + BURST_SECONDS
                else:
                    burst += 1
            woke = False
        if item is _NOTHING:
            if now >= deadline:
                continue  # due, and nothing waits in the mailbox: the timer's turn again
            if deadline == math.inf:
                try:
                    item = await mailbox.get()
                except MailboxClosed:
                    return
            else:
                with trio.move_on_at(deadline):
                    try:
                        item = await mailbox.get()
                    except MailboxClosed:
                        return
                if item is _NOTHING:
                    continue  # the deadline came first: the loop's top calls wakeup()
            burst, burst_ends = 0, trio.current_time() + BURST_SECONDS
        if type(item) is Ask:
            slot = item.slot
            if slot.done:
                # The asker gave up (timed out or cancelled) while it waited here: nobody
                # would see the answer, so the actor never sees the question.
                mailbox.processed += 1
                continue
            context._current = slot
            try:
                answer = await receive(item.message)
            except Exception as exc:
                # Also when the reply was deferred: the handler failed, so it never will.
                slot.fail(exc)
                context._deferred.pop(slot, None)
            else:
                if context._current is slot:
                    slot.set(answer)
            context._current = None
        elif type(item) is Stop:
            return
        else:
            await receive(item)  # type: ignore[arg-type]  # a tell: the sender typed it M
        mailbox.processed += 1


async def run_actor(
    spec: ActorSpec[M],
    ref: ActorRef[M],
    mailbox: Mailbox,
    incarnation: int,
    task_status: trio.TaskStatus[ActorRef[M]],
) -> None:
    """Run one incarnation: ``started``, report the ref, serve, ``stopped``.

    Raises what ``started`` raised before reporting, or the crash after it, unwrapped.
    Pending asks this incarnation held are failed as it ends, so no asker waits forever.
    """
    actor = spec.factory()
    crash: Exception | None = None
    context: Context[M] | None = None
    try:
        async with trio.open_nursery() as nursery:
            context = Context(ref, incarnation, nursery)
            actor.context = context
            try:
                await actor.started()
            except Exception as exc:
                crash = exc
            else:
                task_status.started(ref)
                try:
                    await _serve(actor, mailbox, context)
                except Exception as exc:
                    crash = exc
                try:
                    await actor.stopped()
                except Exception as exc:
                    crash = exc  # the crash it may have been cleaning up is its __context__
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        # A background task failed (an exception group) or we were cancelled.
        inner = unwrap(exc)
        if context is not None:
            _fail_pending(
                context, mailbox, ref.name, inner if isinstance(inner, Exception) else None
            )
        if isinstance(inner, Exception) and inner is not exc:
            raise inner from None  # one failure: report it as itself, not as a group
        raise
    assert context is not None
    _fail_pending(context, mailbox, ref.name, crash)
    if crash is not None:
        raise crash


def unwrap(error: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups, else ``error``."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _fail_pending(
    context: Context[Any], mailbox: Mailbox, name: str, crash: Exception | None
) -> None:
    """Fail the asks this incarnation still held: `ActorStopped` if the actor is gone for
    good, else `ActorCrashed` (its ``__cause__`` the crash, if it was one)."""
    pending = list(context._deferred.values())
    if context._current is not None:
        pending.append(Reply(context._current, None))
        context._current = None
    for reply in pending:
        if mailbox.closed:
            reply.fail(ActorStopped(name))
        else:
            error = ActorCrashed(name)
            error.__cause__ = crash
            reply.fail(error)


def reject_queued(mailbox: Mailbox) -> None:
    """Fail every queued ask with `ActorStopped` and drop queued tells."""
    for item in mailbox.take_all():
        if type(item) is Ask:
            item.slot.fail(ActorStopped(mailbox.name))


def stop_for_good(mailbox: Mailbox, policy: StopPolicy) -> None:
    """Close ``mailbox``; reject what is queued unless the actor is to drain it."""
    mailbox.close()
    if policy is StopPolicy.REJECT:
        reject_queued(mailbox)
