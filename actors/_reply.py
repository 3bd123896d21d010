"""Reply slots: the one-shot rendezvous between an ``ask`` and the actor that answers it.

A slot is resolved at most once. An asker that gives up (timeout or cancellation) abandons
its slot, and a late answer is dropped silently: the actor never blocks on a reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import outcome
import trio

if TYPE_CHECKING:
    from ._timer import AskTimer


class ReplySlot:
    """Where one ask waits for its answer; the runtime's side of a `Reply`."""

    __slots__ = ("_abandoned", "_outcome", "_task", "timer")

    def __init__(self) -> None:
        self._outcome: outcome.Outcome[Any] | None = None
        self._task: trio.lowlevel.Task | None = None
        self._abandoned = False
        self.timer: AskTimer | None = None
        """The timer watching this slot's deadline, told when the slot is done."""

    @property
    def done(self) -> bool:
        """True once answered or abandoned: nothing sent to it will be seen."""
        return self._outcome is not None or self._abandoned

    def set(self, value: object) -> None:
        self._resolve(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._resolve(outcome.Error(error))

    def _resolve(self, result: outcome.Outcome[Any]) -> None:
        if self._outcome is not None or self._abandoned:
            return
        self._outcome = result
        self._release_timer()
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task, result)

    async def wait(self) -> Any:
        """Park until answered; cancellation abandons the slot. An answer already given
        is returned even to a cancelled caller: the actor acted on it being delivered
        (a poll's jobs would go to nobody), and the next checkpoint raises anyway."""
        if self._outcome is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return self._outcome.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._task = None
            self._abandoned = True
            self._release_timer()
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def _release_timer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.forget()


class Reply:
    """A deferred answer to an ask, taken with ``Context.defer()`` and resolved later.

    Resolving twice, or after the asker gave up, does nothing. A `Reply` taken while
    handling a tell goes nowhere: resolving it is allowed and does nothing.
    """

    __slots__ = ("_owner", "_slot")

    def __init__(self, slot: ReplySlot | None, owner: dict[ReplySlot, Reply] | None) -> None:
        self._slot = slot
        self._owner = owner

    @property
    def done(self) -> bool:
        return self._slot is None or self._slot.done

    def set(self, value: object) -> None:
        """Answer the asker with ``value``."""
        if self._slot is not None:
            self._slot.set(value)
        self._release()

    def fail(self, error: BaseException) -> None:
        """Make the asker's ``ask`` raise ``error``."""
        if self._slot is not None:
            self._slot.fail(error)
        self._release()

    def _release(self) -> None:
        if self._owner is not None and self._slot is not None:
            self._owner.pop(self._slot, None)
        self._owner = None
