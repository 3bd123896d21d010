"""The actor system: a root supervisor that lives inside the caller's Trio program.

There is no module-global state. Each ``open_system()`` owns its own tree, so two systems
in one process never see each other.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import trio

from ._actor import Actor, ActorRef, stop_for_good
from ._spec import (
    DEFAULT_CAPACITY,
    DEFAULT_SHUTDOWN,
    ActorSpec,
    ChildSpec,
    Restart,
    RestartBackoff,
    StopPolicy,
    Strategy,
    SupervisorSpec,
)
from ._supervisor import SupervisorCell, SupervisorRef, finalize, run_supervisor
from ._timer import AskTimer

M = TypeVar("M")


class ActorSystem:
    """A running tree of supervised actors, rooted at ``root``."""

    def __init__(self, root: SupervisorRef, cell: SupervisorCell, done: trio.Event) -> None:
        self.root = root
        self._cell = cell
        self._done = done
        self._keys = itertools.count(1)

    @property
    def name(self) -> str:
        return self.root.name

    async def spawn(
        self,
        factory: Callable[[], Actor[M]],
        *,
        key: Hashable | None = None,
        restart: Restart = Restart.PERMANENT,
        capacity: int = DEFAULT_CAPACITY,
        on_stop: StopPolicy = StopPolicy.DRAIN,
        shutdown: float | None = DEFAULT_SHUTDOWN,
    ) -> ActorRef[M]:
        """Start an actor under the root supervisor; its ref, once it has started."""
        if key is None:
            key = f"{getattr(factory, '__name__', 'actor')}-{next(self._keys)}"
        spec = ActorSpec(key, factory, restart, capacity, on_stop, shutdown)
        return await self.root.start_child(spec)

    @overload
    async def start(self, spec: ActorSpec[M]) -> ActorRef[M]: ...
    @overload
    async def start(self, spec: SupervisorSpec) -> SupervisorRef: ...

    async def start(self, spec: ChildSpec) -> ActorRef[Any] | SupervisorRef:
        """Start any child spec (an actor or a whole supervisor subtree) under the root."""
        return await self.root.start_child(spec)

    def whereis(self, key: Hashable) -> ActorRef[Any] | SupervisorRef | None:
        return self.root.whereis(key)

    async def stop(self) -> None:
        """Stop every child in reverse start order, each within its grace. Idempotent."""
        stop_for_good(self._cell.mailbox, StopPolicy.REJECT)
        await self._done.wait()


@asynccontextmanager
async def open_system(
    name: str = "system",
    *,
    children: Sequence[ChildSpec] = (),
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    max_restarts: int = 3,
    within: float = 5.0,
    backoff: RestartBackoff | None = None,
    on_restart: Callable[[str, Exception | None], None] | None = None,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the block.

    ``children`` start in order before the block is entered. Leaving the block normally
    stops them in reverse order, each within its grace period; leaving it by an exception
    (or cancellation) cancels them at once. If the root supervisor gives up, the block is
    cancelled and `SupervisorGaveUp` comes out of it (in an exception group, as Trio does).
    ``on_restart`` is the root supervisor's (`SupervisorSpec`): told of each restart of
    one of its children.
    """
    spec = SupervisorSpec(
        key=name,
        children=children,
        strategy=strategy,
        max_restarts=max_restarts,
        within=within,
        backoff=backoff if backoff is not None else RestartBackoff(),
        on_restart=on_restart,
    )
    timer = AskTimer()
    cell = SupervisorCell(spec, name, timer)
    done = trio.Event()

    async def run_root(task_status: trio.TaskStatus[SupervisorRef]) -> None:
        try:
            await run_supervisor(spec, cell, task_status)
        finally:
            # However the tree ended, nothing may be sent into it any more: close every
            # mailbox in it and fail what waits there.
            finalize(cell)
            done.set()

    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            # The timer outlives the tree: children may still ask each other while stopping.
            timer_scope: trio.CancelScope = await nursery.start(timer.run)
            root: SupervisorRef = await nursery.start(run_root)
            system = ActorSystem(root, cell, done)
            try:
                yield system
            except BaseException as exc:
                body_error = exc
                nursery.cancel_scope.cancel()
                raise
            await system.stop()
            timer_scope.cancel()
    except BaseExceptionGroup as group:
        # The block's own exception comes out as itself when nothing else went wrong.
        if body_error is not None and group.exceptions == (body_error,):
            raise body_error from None
        raise
