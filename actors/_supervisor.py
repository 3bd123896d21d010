"""Supervisors: start children in order, restart them by strategy, stop them in reverse.

A supervisor is itself a child (of another supervisor, or of the system), so trees nest.
Each child lives in a *cell* that outlives its incarnations: the cell holds the mailbox
and the ref, so a restart is invisible to whoever holds the ref. A supervisor's cell also
keeps its static children's cells, so even a restart of the supervisor itself keeps the
refs of the actors below it working. Dynamic children (started with ``start_child``) end
with the supervisor incarnation that started them.

The supervisor handles one thing at a time: notices from its children and its own timer
(a control lane that is never full and is read first), then requests to start or stop
children. Like OTP's ``supervisor``, it never waits in its loop for a child to start nor
sleeps there: a child starts in the supervisor's nursery, beside the loop, and reports
back with a message (`_ChildStarted`, or `_ChildExited` if its start failed); a restart
backoff is a timer that posts `_Relaunch` to the supervisor. So a slow ``started()`` or
a backoff never delays a request about another child, nor a stop. Only stopping
children (within their grace) runs in the loop, and a stop request interrupts it.

Every restart attempt counts toward the restart intensity, a failed start of a restart
included, so a child that cannot start again makes its supervisor give up.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import trio

from ._actor import STOP, ActorRef, Ask, Request, Stop, reject_queued, run_actor, stop_for_good
from ._mailbox import Mailbox, MailboxClosed, MailboxStatistics
from ._reply import ReplySlot
from ._spec import ActorSpec, ChildSpec, Restart, StopPolicy, Strategy, SupervisorSpec
from ._timer import AskTimer
from .errors import (
    ActorStopped,
    ChildNotFound,
    ChildStartFailed,
    DuplicateChild,
    SupervisorGaveUp,
)

log = logging.getLogger("actors")

M = TypeVar("M")


class ActorCell:
    """Where an actor's mailbox and ref live across its incarnations."""

    __slots__ = ("mailbox", "name", "ref")

    def __init__(self, spec: ActorSpec[Any], name: str, timer: AskTimer) -> None:
        self.name = name
        self.mailbox = Mailbox(name, spec.capacity)
        self.ref: ActorRef[Any] = ActorRef(spec.key, name, self.mailbox, timer)


class SupervisorCell:
    """A supervisor's mailbox and ref, its static children's cells, and who runs now."""

    __slots__ = ("children", "mailbox", "name", "ref", "static_cells", "timer")

    def __init__(self, spec: SupervisorSpec, name: str, timer: AskTimer) -> None:
        self.name = name
        self.timer = timer
        self.mailbox = Mailbox(name, spec.capacity)
        self.ref = SupervisorRef(spec.key, self)
        self.static_cells: dict[Hashable, Cell] = {}
        self.children: dict[Hashable, _Child] = {}


Cell = ActorCell | SupervisorCell


def make_cell(spec: ChildSpec, name: str, timer: AskTimer) -> Cell:
    if isinstance(spec, SupervisorSpec):
        return SupervisorCell(spec, name, timer)
    return ActorCell(spec, name, timer)


def _stop_policy(spec: ChildSpec) -> StopPolicy:
    return spec.on_stop if isinstance(spec, ActorSpec) else StopPolicy.REJECT


def finalize(cell: Cell) -> None:
    """The cell's child is gone for good: close its mailbox and fail what is queued."""
    cell.mailbox.close()
    reject_queued(cell.mailbox)
    if isinstance(cell, SupervisorCell):
        for child in cell.children.values():
            finalize(child.cell)
        for child_cell in cell.static_cells.values():
            finalize(child_cell)
        cell.static_cells.clear()
        cell.children.clear()


@dataclass(frozen=True, slots=True)
class _StartChild(Request[Any]):
    spec: ChildSpec
    exist_ok: bool


@dataclass(frozen=True, slots=True)
class _StopChild(Request[None]):
    key: Hashable


@dataclass(frozen=True, slots=True)
class _ChildStarted:
    """A child's start-up finished: it is reachable now."""

    child: _Child
    generation: int


@dataclass(frozen=True, slots=True)
class _ChildExited:
    """A child's incarnation ended; ``started`` False if it failed to start."""

    child: _Child
    generation: int
    error: Exception | None
    started: bool = True


@dataclass(frozen=True, slots=True)
class _Relaunch:
    """The supervisor's timer: the backoff of a restart is over, start ``group`` (in
    order) unless it was scheduled again or stopped meanwhile (``token``)."""

    group: tuple[_Child, ...]
    token: object


class _Child:
    """One child of one supervisor incarnation."""

    __slots__ = (
        "cell",
        "done",
        "dynamic",
        "generation",
        "relaunch",
        "scope",
        "spec",
        "stopping",
        "then",
        "waiters",
    )

    def __init__(self, spec: ChildSpec, cell: Cell, dynamic: bool) -> None:
        self.spec = spec
        self.cell = cell
        self.dynamic = dynamic
        self.generation = 0
        self.stopping = False
        self.done = trio.Event()
        """Set when the task of the current incarnation has ended (set while none runs)."""
        self.done.set()
        self.scope = trio.CancelScope()
        self.waiters: list[ReplySlot] = []
        """``start_child`` asks waiting for this child's first start-up."""
        self.then: tuple[_Child, ...] = ()
        """Members of its restart group to start, in order, once this one has started."""
        self.relaunch: object | None = None
        """The token of the `_Relaunch` this child waits for, if any."""


class _StartStatus:
    """Remembers that ``started`` happened, and tells whoever waits for it: the task that
    called ``nursery.start`` (``inner``), or the supervisor's loop (``notify``)."""

    __slots__ = ("happened", "inner", "notify")

    def __init__(
        self, inner: trio.TaskStatus[Any] | None, notify: Callable[[], None] | None
    ) -> None:
        self.inner = inner
        self.notify = notify
        self.happened = False

    def started(self, value: Any = None) -> None:
        self.happened = True
        if self.inner is not None:
            self.inner.started(value)
        if self.notify is not None:
            self.notify()


class SupervisorRef:
    """The address of a supervisor; like `ActorRef`, it outlives incarnations."""

    __slots__ = ("_cell", "_requests", "key")

    def __init__(self, key: Hashable, cell: SupervisorCell) -> None:
        self.key = key
        self._cell = cell
        self._requests: ActorRef[Any] = ActorRef(key, cell.name, cell.mailbox, cell.timer)

    def __repr__(self) -> str:
        return f"<SupervisorRef {self.name}>"

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def stopped(self) -> bool:
        return self._cell.mailbox.closed

    @overload
    async def start_child(
        self, spec: ActorSpec[M], *, exist_ok: bool = ..., timeout: float | None = ...
    ) -> ActorRef[M]: ...
    @overload
    async def start_child(
        self, spec: SupervisorSpec, *, exist_ok: bool = ..., timeout: float | None = ...
    ) -> SupervisorRef: ...

    async def start_child(
        self, spec: ChildSpec, *, exist_ok: bool = False, timeout: float | None = None
    ) -> ActorRef[Any] | SupervisorRef:
        """Start a dynamic child and return its ref once its start-up has finished.

        With ``exist_ok``, a child already running (or starting) under that key is
        returned instead of raising `DuplicateChild`. A failing start raises
        `ChildStartFailed`. After ``timeout`` seconds the caller gets `AskTimeout`; the
        start-up goes on beside the supervisor's loop, and the child is reachable once
        it is up.
        """
        ref: ActorRef[Any] | SupervisorRef = await self._requests.ask(
            _StartChild(spec, exist_ok), timeout=timeout
        )
        return ref

    async def stop_child(self, key: Hashable, *, timeout: float | None = None) -> None:
        """Stop a child for good (with its grace period) and forget it."""
        await self._requests.ask(_StopChild(key), timeout=timeout)

    def whereis(self, key: Hashable) -> ActorRef[Any] | SupervisorRef | None:
        """The ref of the child with ``key``, running or being restarted; else None."""
        child = self._cell.children.get(key)
        return None if child is None else child.cell.ref

    def children(self) -> list[Hashable]:
        """The keys of the children, in start order."""
        return list(self._cell.children)

    def statistics(self) -> MailboxStatistics:
        return self._cell.mailbox.statistics()


class _Supervision:
    """One incarnation of a supervisor."""

    def __init__(self, spec: SupervisorSpec, cell: SupervisorCell, nursery: trio.Nursery):
        self.spec = spec
        self.cell = cell
        self.nursery = nursery
        self.children = cell.children
        self.children.clear()
        self.starting: dict[Hashable, _Child] = {}
        """New dynamic children whose start-up runs: not reachable yet."""
        self.restarts: deque[float] = deque()
        self.busy: trio.CancelScope | None = None

    # ------------------------------------------------------------------- starting

    async def start_static(self) -> None:
        """Start the static children in order, each up before the next (before the loop
        runs: the supervisor's own start-up)."""
        for spec in self.spec.children:
            key = spec.key
            cell = self.cell.static_cells.get(key)
            if cell is None:
                cell = make_cell(spec, f"{self.cell.name}/{key}", self.cell.timer)
                self.cell.static_cells[key] = cell
            child = _Child(spec, cell, dynamic=False)
            try:
                await self.nursery.start(self._start_now, child)
            except Exception as exc:
                raise ChildStartFailed(key) from exc
            self.children[key] = child

    async def _start_now(self, child: _Child, task_status: trio.TaskStatus[Any]) -> None:
        self._prepare(child)
        await self._child_task(child, child.generation, child.scope, child.done, task_status)

    def request_start(self, spec: ChildSpec, exist_ok: bool, slot: ReplySlot) -> None:
        """Start a dynamic child beside the loop; ``slot`` is answered when it is up."""
        key = spec.key
        existing = self.children.get(key)
        if existing is not None:
            if not exist_ok:
                raise DuplicateChild(key)
            slot.set(existing.cell.ref)
            return
        starting = self.starting.get(key)
        if starting is not None:
            if not exist_ok:
                raise DuplicateChild(key)
            starting.waiters.append(slot)  # get-or-start: one start, every asker answered
            return
        child = _Child(spec, make_cell(spec, f"{self.cell.name}/{key}", self.cell.timer), True)
        child.waiters.append(slot)
        self.starting[key] = child
        self.launch(child)

    def _prepare(self, child: _Child) -> None:
        child.generation += 1
        child.done = trio.Event()
        child.scope = trio.CancelScope()
        child.stopping = False
        child.relaunch = None
        # A stop meant for the last incarnation must not end this one at once.
        child.cell.mailbox.clear_control()

    def launch(self, child: _Child) -> None:
        """Start an incarnation of ``child`` in the nursery; the loop hears how it went."""
        self._prepare(child)
        self.nursery.start_soon(
            self._child_task, child, child.generation, child.scope, child.done, None
        )

    async def _child_task(
        self,
        child: _Child,
        generation: int,
        scope: trio.CancelScope,
        done: trio.Event,
        task_status: trio.TaskStatus[Any] | None,
    ) -> None:
        """Run one incarnation. Started by ``nursery.start`` (``task_status``), a failing
        start-up raises to the starter; else every outcome comes to the loop as a message."""
        mailbox = self.cell.mailbox

        def notify() -> None:
            mailbox.put_system(_ChildStarted(child, generation))

        status = _StartStatus(task_status, notify if task_status is None else None)
        error: Exception | None = None
        try:
            with scope:
                try:
                    if isinstance(child.spec, ActorSpec):
                        assert isinstance(child.cell, ActorCell)
                        await run_actor(
                            child.spec, child.cell.ref, child.cell.mailbox, generation - 1, status
                        )
                    else:
                        assert isinstance(child.cell, SupervisorCell)
                        await run_supervisor(child.spec, child.cell, status)
                except Exception as exc:
                    if task_status is not None and not status.happened:
                        raise
                    error = exc
        finally:
            done.set()
        mailbox.put_system(_ChildExited(child, generation, error, status.happened))

    def on_started(self, notice: _ChildStarted) -> None:
        child = notice.child
        if child.generation != notice.generation or child.stopping or not self._current(child):
            return
        key = child.spec.key
        if self.starting.get(key) is child:
            # Reachable only now that its start-up has finished.
            del self.starting[key]
            self.children[key] = child
        waiters, child.waiters = child.waiters, []
        for slot in waiters:
            slot.set(child.cell.ref)
        rest, child.then = child.then, ()
        self._start_group(rest)

    def _start_group(self, group: tuple[_Child, ...]) -> None:
        """Start the first member still ours; the others follow it, in order, once it is
        up (as a group restart must: each reachable before the next starts)."""
        members = tuple(member for member in group if self.children.get(member.spec.key) is member)
        if members:
            first, *rest = members
            first.then = tuple(rest)
            self.launch(first)

    def _current(self, child: _Child) -> bool:
        key = child.spec.key
        return self.children.get(key) is child or self.starting.get(key) is child

    # ------------------------------------------------------------------- stopping

    async def stop(self, child: _Child, *, final: bool) -> None:
        """Stop the child's incarnation within its grace; ``final`` also forgets it."""
        if final:
            stop_for_good(child.cell.mailbox, _stop_policy(child.spec))
        child.relaunch = None  # a restart scheduled for it is off
        child.then = ()
        # Also when its task has ended already: the exit notice on its way is ours.
        child.stopping = True
        if not child.done.is_set():
            if not final:
                child.cell.mailbox.put_system(STOP)
            grace = child.spec.shutdown
            with trio.move_on_after(math.inf if grace is None else grace):
                await child.done.wait()
            if not child.done.is_set():
                child.scope.cancel()
                await child.done.wait()
        waiters, child.waiters = child.waiters, []
        for slot in waiters:
            slot.fail(ActorStopped(child.cell.name))
        if final:
            finalize(child.cell)
            key = child.spec.key
            if self.children.get(key) is child:
                del self.children[key]
            if self.starting.get(key) is child:
                del self.starting[key]
            if not child.dynamic and self.cell.static_cells.get(key) is child.cell:
                del self.cell.static_cells[key]

    async def stop_all(self, *, final: bool) -> None:
        for child in reversed(list(self.starting.values())):
            await self.stop(child, final=True)
        for child in reversed(list(self.children.values())):
            await self.stop(child, final=final or child.dynamic)

    def abandon_starts(self) -> None:
        """The incarnation ends (perhaps cancelled): nobody may wait for a start-up."""
        for child in list(self.starting.values()):
            waiters, child.waiters = child.waiters, []
            for slot in waiters:
                slot.fail(ActorStopped(child.cell.name))
            finalize(child.cell)
        self.starting.clear()

    # ------------------------------------------------------------------ restarting

    def count_restart(self, child: _Child, cause: Exception | None) -> int:
        """Note one restart attempt; the number in the window, or give up."""
        key = child.spec.key
        now = trio.current_time()
        window_start = now - self.spec.within
        while self.restarts and self.restarts[0] <= window_start:
            self.restarts.popleft()
        if len(self.restarts) >= self.spec.max_restarts:
            log.error("%s gives up: %r restarts too often", self.cell.name, key)
            raise SupervisorGaveUp(
                self.cell.name, key, self.spec.max_restarts, self.spec.within
            ) from cause
        self.restarts.append(now)
        hook = self.spec.on_restart
        if hook is not None:
            try:
                hook(child.cell.name, cause)
            except Exception:  # the hook's fault, not the child's: supervision goes on
                log.exception("%s: on_restart failed for %s", self.cell.name, child.cell.name)
        return len(self.restarts)

    def schedule(self, group: list[_Child], restarts: int) -> None:
        """Start ``group`` again once the backoff of the ``restarts``-th restart is over:
        a timer posts `_Relaunch` to the loop, which meanwhile serves everything else."""
        token = object()
        for member in group:
            member.relaunch = token
        notice = _Relaunch(tuple(group), token)
        delay = self.spec.backoff.delay(restarts)
        if delay <= 0:
            self.cell.mailbox.put_system(notice)
        else:
            self.nursery.start_soon(self._timer, delay, notice)

    async def _timer(self, delay: float, notice: _Relaunch) -> None:
        await trio.sleep(delay)
        self.cell.mailbox.put_system(notice)

    def on_relaunch(self, notice: _Relaunch) -> None:
        self._start_group(tuple(m for m in notice.group if m.relaunch is notice.token))

    async def on_exit(self, notice: _ChildExited) -> None:
        child = notice.child
        key = child.spec.key
        if child.generation != notice.generation or child.stopping or not self._current(child):
            return  # an incarnation we stopped on purpose, or one already replaced
        if not notice.started:
            if self.starting.get(key) is child:
                # A new child that could not start: its starters hear why; nothing stays.
                del self.starting[key]
                error = ChildStartFailed(key)
                error.__cause__ = notice.error
                waiters, child.waiters = child.waiters, []
                for slot in waiters:
                    slot.fail(error)
                finalize(child.cell)
                return
            # A restart that failed to start: one more restart attempt, after a backoff.
            log.warning(
                "%s failed to restart: %r", child.cell.name, notice.error, exc_info=notice.error
            )
            restarts = self.count_restart(child, notice.error)
            self.schedule([child, *child.then], restarts)
            child.then = ()
            return
        kind = child.spec.restart
        ends = kind is Restart.TEMPORARY or (kind is Restart.TRANSIENT and notice.error is None)
        if notice.error is not None:
            log.warning(
                "%s crashed, %s: %r",
                child.cell.name,
                "not restarted (temporary)" if ends else "restarting it",
                notice.error,
                exc_info=notice.error,
            )
        if ends:
            await self.stop(child, final=True)
            return
        restarts = self.count_restart(child, notice.error)
        members = list(self.children.values())
        if self.spec.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif self.spec.strategy is Strategy.ONE_FOR_ALL:
            group = members
        else:
            group = members[members.index(child) :]
        for other in reversed(group):
            if other is not child:
                await self.stop(other, final=other.spec.restart is Restart.TEMPORARY)
        self.schedule([m for m in group if self.children.get(m.spec.key) is m], restarts)

    # ------------------------------------------------------------------------ loop

    async def serve(self) -> bool:
        """Handle notices and requests until stopped; True when stopped for good.

        Only stopping children waits in the loop (within their grace). A stop request
        that arrives meanwhile interrupts it: the supervisor never makes its own
        supervisor wait for a restart it is about to undo.
        """
        mailbox = self.cell.mailbox
        mailbox.on_control = self._interrupt
        try:
            while True:
                try:
                    item = await mailbox.get()
                except MailboxClosed:
                    return True
                kind = type(item)
                if kind is Stop:
                    return False
                if kind is _ChildStarted:
                    self.on_started(item)  # type: ignore[arg-type]
                elif kind is _Relaunch:
                    self.on_relaunch(item)  # type: ignore[arg-type]
                else:
                    with trio.CancelScope() as self.busy:
                        if self._stop_requested():
                            self.busy.cancel()
                        if kind is _ChildExited:
                            await self.on_exit(item)  # type: ignore[arg-type]
                        elif kind is Ask:
                            await self._answer(item)  # type: ignore[arg-type]
                    self.busy = None
                mailbox.processed += 1
        finally:
            mailbox.on_control = None

    def _stop_requested(self) -> bool:
        mailbox = self.cell.mailbox
        return mailbox.closed or mailbox.control_pending(lambda item: type(item) is Stop)

    def _interrupt(self, item: object | None) -> None:
        if self.busy is not None and (item is None or type(item) is Stop):
            self.busy.cancel()

    async def _answer(self, item: Ask) -> None:
        slot = item.slot
        if slot.done:
            return  # the asker gave up while it waited in the mailbox: not delivered
        try:
            match item.message:
                case _StartChild(spec=spec, exist_ok=exist_ok):
                    self.request_start(spec, exist_ok, slot)
                    return  # answered once the child is up
                case _StopChild(key=key):
                    child = self.children.get(key) or self.starting.get(key)
                    if child is None:
                        raise ChildNotFound(key)
                    # Stopped while it restarts, first of a group: the members that were
                    # to follow it start now, instead of waiting for it for ever.
                    rest = child.then
                    await self.stop(child, final=True)
                    self._start_group(rest)
                case message:
                    raise TypeError(f"supervisor {self.cell.name} does not understand {message!r}")
        except Exception as exc:
            slot.fail(exc)
        except BaseException as exc:
            # Interrupted by a stop, or cancelled from above: never leave the asker
            # hanging. (KeyboardInterrupt and the like end the whole program instead.)
            if _only_cancelled(exc):
                slot.fail(ActorStopped(self.cell.name))
            raise
        else:
            slot.set(None)


def _only_cancelled(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


async def run_supervisor(
    spec: SupervisorSpec, cell: SupervisorCell, task_status: trio.TaskStatus[Any]
) -> None:
    """Run one incarnation of a supervisor: start children, supervise, stop in reverse."""
    error: Exception | None = None
    supervision: _Supervision | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervision = _Supervision(spec, cell, nursery)
            final = False
            try:
                await supervision.start_static()
                task_status.started(cell.ref)
                final = await supervision.serve()
            except Exception as exc:
                error = exc
            await supervision.stop_all(final=final)
            nursery.cancel_scope.cancel()
    except BaseException as exc:
        # Cancelled before the children were stopped: nobody may wait for a start-up.
        # (KeyboardInterrupt and the like end the whole program instead.)
        if supervision is not None and _only_cancelled(exc):
            supervision.abandon_starts()
        raise
    if error is not None:
        raise error
