"""Ask timeouts: one task per system watches every pending ask's deadline.

A trio cancel scope per ask would cost more than the rest of the ask put together (about
15 us of a 30-50 us round trip, measured in bench/actors.py), so asks whose message went
straight into the mailbox register their deadline here instead: a heap push, and a wake
of one timer task when the earliest deadline passes. Answered asks leave stale entries
behind; they are counted and the heap is compacted once they are the majority, so memory
stays proportional to the asks actually pending.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING

import trio

from .errors import ActorStopped, AskTimeout

if TYPE_CHECKING:
    from ._reply import ReplySlot

_COMPACT_AT = 1024


class AskTimer:
    """The deadlines of pending asks, and the task that fails them when they pass."""

    __slots__ = ("_heap", "_scope", "_seq", "_stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, ReplySlot, str, float]] = []
        self._seq = itertools.count()
        self._stale = 0
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def watch(self, slot: ReplySlot, deadline: float, name: str, timeout: float) -> None:
        """Fail ``slot`` with `AskTimeout` at ``deadline`` unless it is answered first."""
        heapq.heappush(self._heap, (deadline, next(self._seq), slot, name, timeout))
        slot.timer = self
        scope = self._scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline

    def forget(self) -> None:
        """One watched slot was answered or abandoned: its entry is stale now."""
        self._stale += 1
        if self._stale >= _COMPACT_AT and self._stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].done]
            heapq.heapify(self._heap)
            self._stale = 0

    async def run(self, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        """Fail asks as their deadlines pass; reports the scope that ends it."""
        try:
            with trio.CancelScope() as lifetime:
                task_status.started(lifetime)
                while True:
                    heap = self._heap  # compaction replaces it
                    deadline = heap[0][0] if heap else math.inf
                    with trio.CancelScope(deadline=deadline) as self._scope:
                        await trio.sleep_forever()
                    self._scope = None
                    self._expire(trio.current_time())
        finally:
            # The system is gone: no ask it watched may wait for a timeout that never comes.
            for _, _, slot, name, _ in self._heap:
                if not slot.done:
                    slot.timer = None
                    slot.fail(ActorStopped(name))
            self._heap = []

    def _expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, slot, name, timeout = heapq.heappop(heap)
            if slot.done:
                self._stale -= 1
            else:
                slot.timer = None
                slot.fail(AskTimeout(name, timeout))
