"""Supervisors: start children in order, restart them by strategy, stop them in reverse.

A supervisor is itself a child (of another supervisor, or of the system), so trees nest.
Each child lives in a *cell* that outlives its incarnations: the cell holds the mailbox
and the ref, so a restart is invisible to whoever holds the ref. A supervisor's cell also
keeps its static children's cells, so even a restart of the supervisor itself keeps the
refs of the actors below it working. Dynamic children (started with ``start_child``) end
with the supervisor incarnation that started them.

The supervisor handles one thing at a time: child exit notices (a control lane that is
never full and is read first), then requests to start or stop children.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import trio

from ._actor import STOP, ActorRef, Ask, Request, Stop, reject_queued, run_actor, stop_for_good
from ._mailbox import Mailbox, MailboxClosed, MailboxStatistics
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
class _ChildExited:
    child: _Child
    generation: int
    error: Exception | None


class _Child:
    """One child of one supervisor incarnation."""

    __slots__ = ("cell", "done", "dynamic", "generation", "running", "scope", "spec", "stopping")

    def __init__(self, spec: ChildSpec, cell: Cell, dynamic: bool) -> None:
        self.spec = spec
        self.cell = cell
        self.dynamic = dynamic
        self.generation = 0
        self.running = False
        self.stopping = False
        self.done = trio.Event()
        self.scope = trio.CancelScope()


class _StartStatus:
    """Forwards ``started`` and remembers that it happened."""

    __slots__ = ("happened", "inner")

    def __init__(self, inner: trio.TaskStatus[Any]) -> None:
        self.inner = inner
        self.happened = False

    def started(self, value: Any = None) -> None:
        self.happened = True
        self.inner.started(value)


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

        With ``exist_ok``, a child already running under that key is returned instead of
        raising `DuplicateChild`. A failing start raises `ChildStartFailed`.
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
        self.restarts: deque[float] = deque()
        self.busy: trio.CancelScope | None = None

    async def start_static(self) -> None:
        for spec in self.spec.children:
            await self.add(spec, dynamic=False)

    async def add(
        self, spec: ChildSpec, *, dynamic: bool, exist_ok: bool = False
    ) -> ActorRef[Any] | SupervisorRef:
        key = spec.key
        existing = self.children.get(key)
        if existing is not None:
            if exist_ok:
                return existing.cell.ref
            raise DuplicateChild(key)
        cell = None if dynamic else self.cell.static_cells.get(key)
        if cell is None:
            cell = make_cell(spec, f"{self.cell.name}/{key}", self.cell.timer)
            if not dynamic:
                self.cell.static_cells[key] = cell
        child = _Child(spec, cell, dynamic)
        try:
            await self.launch(child)
        except Exception as exc:
            if dynamic:
                finalize(cell)
            raise ChildStartFailed(key) from exc
        except BaseException:
            if dynamic:
                finalize(cell)
            raise
        # Reachable only now that its start-up has finished. (Requests are handled one at
        # a time, so no second start of the same key can slip in meanwhile.)
        self.children[key] = child
        return cell.ref

    async def launch(self, child: _Child) -> None:
        child.generation += 1
        child.done = trio.Event()
        child.stopping = False
        # A stop meant for the last incarnation must not end this one at once.
        child.cell.mailbox.clear_control()
        await self.nursery.start(self._child_task, child, child.generation, child.done)
        child.running = True

    async def _child_task(
        self, child: _Child, generation: int, done: trio.Event, task_status: trio.TaskStatus[Any]
    ) -> None:
        status = _StartStatus(task_status)
        error: Exception | None = None
        try:
            with trio.CancelScope() as child.scope:
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
                    if not status.happened:
                        raise
                    error = exc
        finally:
            done.set()
        if status.happened:
            self.cell.mailbox.put_system(_ChildExited(child, generation, error))

    async def stop(self, child: _Child, *, final: bool) -> None:
        """Stop the child's incarnation within its grace; ``final`` also forgets it."""
        if final:
            stop_for_good(child.cell.mailbox, _stop_policy(child.spec))
        if child.running:
            child.stopping = True
            if not final:
                child.cell.mailbox.put_system(STOP)
            grace = child.spec.shutdown
            with trio.move_on_after(math.inf if grace is None else grace):
                await child.done.wait()
            if not child.done.is_set():
                child.scope.cancel()
                await child.done.wait()
            child.running = False
        if final:
            finalize(child.cell)
            key = child.spec.key
            if self.children.get(key) is child:
                del self.children[key]
            if not child.dynamic and self.cell.static_cells.get(key) is child.cell:
                del self.cell.static_cells[key]

    async def stop_all(self, *, final: bool) -> None:
        for child in reversed(list(self.children.values())):
            await self.stop(child, final=final or child.dynamic)

    def count_restart(self, key: Hashable, cause: Exception | None) -> int:
        """Note one restart; the number of restarts in the window, or give up."""
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
        return len(self.restarts)

    async def on_exit(self, notice: _ChildExited) -> None:
        child = notice.child
        key = child.spec.key
        if (
            self.children.get(key) is not child
            or child.generation != notice.generation
            or child.stopping
        ):
            return  # an incarnation we stopped on purpose, or one already replaced
        child.running = False
        if notice.error is not None:
            log.warning("%s crashed: %r", child.cell.name, notice.error, exc_info=notice.error)
        kind = child.spec.restart
        if kind is Restart.TEMPORARY or (kind is Restart.TRANSIENT and notice.error is None):
            await self.stop(child, final=True)
            return
        restarts = self.count_restart(key, notice.error)
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
        await trio.sleep(self.spec.backoff.delay(restarts))
        for member in group:
            if self.children.get(member.spec.key) is member:
                await self.relaunch(member)

    async def relaunch(self, child: _Child) -> None:
        while True:
            try:
                await self.launch(child)
                return
            except Exception as exc:
                restarts = self.count_restart(child.spec.key, exc)
                await trio.sleep(self.spec.backoff.delay(restarts))

    async def handle(self, message: object) -> object:
        match message:
            case _StartChild(spec=spec, exist_ok=exist_ok):
                return await self.add(spec, dynamic=True, exist_ok=exist_ok)
            case _StopChild(key=key):
                child = self.children.get(key)
                if child is None:
                    raise ChildNotFound(key)
                await self.stop(child, final=True)
                return None
            case _:
                raise TypeError(f"supervisor {self.cell.name} does not understand {message!r}")

    async def serve(self) -> bool:
        """Handle exits and requests until stopped; True when stopped for good.

        Restarts and starts can take long (backoff, a slow ``started()``). A stop request
        that arrives meanwhile interrupts them: the supervisor never makes its own
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
                if type(item) is Stop:
                    return False
                with trio.CancelScope() as self.busy:
                    if self._stop_requested():
                        self.busy.cancel()
                    if type(item) is _ChildExited:
                        await self.on_exit(item)
                    elif type(item) is Ask:
                        await self._answer(item)
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
        try:
            answer = await self.handle(item.message)
        except Exception as exc:
            item.slot.fail(exc)
        except BaseException as exc:
            # Interrupted by a stop, or cancelled from above: never leave the asker
            # hanging. (KeyboardInterrupt and the like end the whole program instead.)
            if _only_cancelled(exc):
                item.slot.fail(ActorStopped(self.cell.name))
            raise
        else:
            item.slot.set(answer)


def _only_cancelled(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return error.split(trio.Cancelled)[1] is None
    return isinstance(error, trio.Cancelled)


async def run_supervisor(
    spec: SupervisorSpec, cell: SupervisorCell, task_status: trio.TaskStatus[Any]
) -> None:
    """Run one incarnation of a supervisor: start children, supervise, stop in reverse."""
    error: Exception | None = None
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
    if error is not None:
        raise error
