"""The bounded mailbox behind every actor reference.

A mailbox outlives the actor incarnations that read it: when a supervisor restarts an
actor, the new incarnation reads the same mailbox, so the references that senders hold
keep working. User messages are bounded by ``capacity``; the runtime's own control
messages (stop requests, child exit notices) go in a separate lane that is never full
and is always read first.

Invariant: once closed, a mailbox accepts no user message again; what was queued before
the close can still be read (drained) or taken back (rejected) by the runtime.

Invariant: senders are served first come, first served. A sender that finds no room
parks with its message; a receive that frees a slot moves the first parked sender's
message into it at once (as trio's memory channels hand an item to the first waiting
sender), so the queue is full whenever a sender is parked and nobody, a ``put_nowait``
included, can take the slot meant for the sender that waited longest.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import outcome
import trio

from .errors import ActorStopped, MailboxFull


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of one mailbox."""

    queued: int
    """User messages waiting to be processed."""
    capacity: int
    """The most user messages the mailbox holds before senders must wait."""
    processed: int
    """Messages handled so far, across every incarnation of the actor."""
    waiting_senders: int
    """Tasks parked in ``send``/``ask`` waiting for room."""
    closed: bool


class MailboxClosed(Exception):
    """Raised by `Mailbox.get` once the mailbox is closed and empty. Internal."""


class Mailbox:
    """A bounded FIFO of user messages plus an unbounded lane for control messages."""

    __slots__ = (
        "_closed",
        "_getters",
        "_queue",
        "_senders",
        "_system",
        "capacity",
        "name",
        "on_control",
        "processed",
    )

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be at least 1, not {capacity}")
        self.name = name
        self.capacity = capacity
        self.processed = 0
        self._queue: deque[object] = deque()
        self._system: deque[object] = deque()
        self._closed = False
        self._getters = trio.lowlevel.ParkingLot()
        self._senders: OrderedDict[trio.lowlevel.Task, object] = OrderedDict()
        """Parked senders and their messages, longest waiting first."""
        self.on_control: Callable[[object | None], None] | None = None
        """Called with each control message as it arrives, and with None on close: lets
        a reader that is busy elsewhere (a supervisor restarting a child) be interrupted."""

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: object) -> None:
        if self._closed:
            raise ActorStopped(self.name)
        if len(self._queue) >= self.capacity:
            raise MailboxFull(self.name, self.capacity)
        self._queue.append(item)
        if self._getters:
            self._getters.unpark()

    async def put(self, item: object) -> None:
        """Queue ``item``, waiting for room while the mailbox is full (backpressure).

        Waiting senders get the room in the order they came. Cancelled while waiting,
        the sender takes its message back: nothing is queued."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.put_nowait(item)
        except MailboxFull:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        task = trio.lowlevel.current_task()
        self._senders[task] = item

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            del self._senders[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def put_system(self, item: object) -> None:
        """Queue a control message: never full, accepted even when closed, read first."""
        self._system.append(item)
        if self._getters:
            self._getters.unpark()
        if self.on_control is not None:
            self.on_control(item)

    def control_pending(self, wanted: Callable[[object], bool]) -> bool:
        """Whether a queued control message is ``wanted``."""
        return any(wanted(item) for item in self._system)

    def clear_control(self) -> None:
        """Forget queued control messages: they were meant for an incarnation that ended."""
        self._system.clear()

    def get_nowait(self) -> object:
        if self._system:
            return self._system.popleft()
        queue = self._queue
        if queue:
            item = queue.popleft()
            if self._senders:
                # The freed slot is the first waiting sender's: its message goes in now.
                task, sent = self._senders.popitem(last=False)
                queue.append(sent)
                trio.lowlevel.reschedule(task)
            return item
        if self._closed:
            raise MailboxClosed
        raise trio.WouldBlock

    async def get(self) -> object:
        """The next message, control messages first; `MailboxClosed` once closed and empty."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self.get_nowait()
        except trio.WouldBlock:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        while True:
            await self._getters.park()
            try:
                return self.get_nowait()
            except trio.WouldBlock:
                continue

    def close(self) -> None:
        """Refuse new user messages; wake every parked sender so it sees `ActorStopped`."""
        if self._closed:
            return
        self._closed = True
        senders, self._senders = self._senders, OrderedDict()
        for task in senders:
            trio.lowlevel.reschedule(task, outcome.Error(ActorStopped(self.name)))
        self._getters.unpark_all()
        if self.on_control is not None:
            self.on_control(None)

    def take_all(self) -> list[object]:
        """Remove and return every queued user message (for rejecting them), with the
        messages of senders still waiting for room (they are queued now)."""
        items = list(self._queue)
        self._queue.clear()
        senders, self._senders = self._senders, OrderedDict()
        for task, item in senders.items():
            items.append(item)
            trio.lowlevel.reschedule(task)
        return items

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            queued=len(self._queue),
            capacity=self.capacity,
            processed=self.processed,
            waiting_senders=len(self._senders),
            closed=self._closed,
        )
