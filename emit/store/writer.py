"""The store writer: the one actor that writes, committing concurrent changes together.

Writes arrive as messages; whatever has queued up while one transaction commits goes
into the next one (group commit), so a burst of N changes costs a handful of fsyncs,
not N. The writer only reports: once a write's transaction is durable (or failed), it
tells the writer's client `Written`, in commit order, and the client does its own
after-commit work on its own task. Stopping drains: what was accepted is committed
before the writer ends.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

import actors

from ..errors import Unavailable
from ..metrics import Metrics
from .base import Fenced, Store
from .records import Changes

MAX_PENDING = 4096
"""Writes held before the writer stops taking more (its mailbox then fills: backpressure)."""
GROUP_ROWS = 50_000
"""Rows at most in one transaction (one write may have more, alone): a burst of big
writes is committed in several transactions, so none needs gigabytes of memory."""


class Source:
    """One client of the writer: one space actor incarnation. The writer remembers a
    source whose write failed only while something still refers to the source (its
    incarnation, or a write of it still queued), so the record of failures never grows
    past the incarnations alive."""

    __slots__ = ("__weakref__",)


@dataclass(frozen=True, slots=True)
class Write:
    """Commit ``changes``, then tell ``report_to`` `Written` with ``batch``.

    ``source`` names the writer's client (one per space actor incarnation). Once a write
    of a source fails, every later write of that source fails too without being tried:
    they were built on the memory of the failed one, and must not reach the log.
    """

    changes: Changes
    report_to: actors.ActorRef[Any]
    batch: int
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """The writer's report on one `Write`: durable (``error`` None) or failed."""

    source: Source | None
    batch: int
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Commit(actors.Request[None]):
    """Commit ``changes`` and answer once durable; `Unavailable` if the store failed.
    An empty `Changes` checks that the store takes writes (readiness), or waits until
    every write queued before it is decided."""

    changes: Changes


@dataclass(frozen=True, slots=True)
class Settle(actors.Request["BaseException | None"]):
    """Answer, once every write queued before this is decided, whether a write of
    ``source`` failed (the refusal its later writes got), or None if all committed.
    For a client that ends with writes in flight whose reports it will not read."""

    source: Source


@dataclass(frozen=True, slots=True)
class _Settling:
    reply: actors.Reply
    source: Source


_Item = tuple[Changes, "Write | actors.Reply | _Settling", "Source | None"]


def _rows(changes: Changes) -> int:
    return (
        len(changes.inserts)
        + len(changes.updates)
        + len(changes.events)
        + len(changes.logs)
        + 4 * len(changes.deleted_jobs)  # the job, its events, logs and callbacks
    )


def _moved(batch: list[_Item], error: Exception) -> list[_Item]:
    """The writes of ``batch`` that ``error`` refused because their spaces moved to
    another node (`Fenced`); none for any other error."""
    if not isinstance(error, Fenced):
        return []
    spaces = error.spaces
    return [item for item in batch if item[0].fence is not None and item[0].fence[0] in spaces]


def _take_group(pending: list[_Item]) -> tuple[list[_Item], list[_Item], int]:
    """The writes for the next transaction, in order, the rest, and the group's rows."""
    rows = 0
    for n, item in enumerate(pending):
        more = _rows(item[0])
        if rows + more > GROUP_ROWS and n > 0:
            return pending[:n], pending[n:], rows
        rows += more
    return pending, [], rows


class StoreWriter(actors.Actor[Write | Commit | Settle]):
    def __init__(self, store: Store, metrics: Metrics | None = None) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.pending: list[_Item] = []
        self.failed_sources: weakref.WeakKeyDictionary[Source, BaseException] = (
            weakref.WeakKeyDictionary()
        )
        self.backlogs: dict[actors.ActorRef[Any], deque[Written]] = {}
        """Reports waiting for room in their client's full mailbox, in order, per client."""
        self.transactions = 0
        self._wake = trio.Event()
        self._room = trio.Event()
        self._lock = trio.Lock()

    async def started(self) -> None:
        self.context.nursery.start_soon(self._commit_loop)

    async def receive(self, message: Write | Commit | Settle) -> object:
        while len(self.pending) >= MAX_PENDING:
            self._room = trio.Event()
            await self._room.wait()
        match message:
            case Write(changes=changes, source=source):
                self.pending.append((changes, message, source))
            case Commit(changes):
                self.pending.append((changes, self.context.defer(), None))
            case Settle(source):
                self.pending.append((Changes(), _Settling(self.context.defer(), source), None))
        self._wake.set()
        return None

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything pending, in as few transactions as it takes."""
        async with self._lock:
            while self.pending:
                batch, self.pending, rows = _take_group(self.pending)
                self._room.set()
                failed = self.failed_sources
                if failed:
                    kept = []
                    for item in batch:
                        source = item[2]
                        if source is not None and source in failed:
                            self._done(item[1], failed[source])  # refused without being tried
                            rows -= _rows(item[0])
                        else:
                            kept.append(item)
                    batch = kept
                if not batch:
                    continue
                error: BaseException | None = None
                began = trio.current_time()
                try:
                    await self.store.commit([changes for changes, _, _ in batch])
                except Exception as exc:
                    refused = _moved(batch, exc)
                    if refused:
                        # Those spaces moved to another node: refuse their writes (and,
                        # as for any failed write, their sources' later ones; a refusal
                        # of its own, as below), and commit the others again without them.
                        assert isinstance(exc, Fenced)
                        moved = Fenced(exc.spaces)
                        for _, done, source in refused:
                            if source is not None:
                                self.failed_sources[source] = moved
                            self._done(done, exc)
                        gone = {id(item) for item in refused}
                        self.pending = [i for i in batch if id(i) not in gone] + self.pending
                        continue
                    error = exc
                    # Kept apart from ``exc``: its traceback holds this frame, and so the
                    # sources, which would keep the weak keys alive for good.
                    refusal = Unavailable(f"an earlier write of this client failed: {exc!r}")
                    for _, _, source in batch:
                        if source is not None:
                            self.failed_sources[source] = refusal
                self.transactions += 1
                self.metrics.store_commit(trio.current_time() - began, rows)
                for _, done, _ in batch:
                    self._done(done, error)

    def _done(self, done: Write | actors.Reply | _Settling, error: BaseException | None) -> None:
        if isinstance(done, Write):
            self._report(done.report_to, Written(done.source, done.batch, error))
        elif isinstance(done, _Settling):
            done.reply.set(self.failed_sources.get(done.source))
        elif error is None:
            done.set(None)
        else:
            done.fail(Unavailable(f"storage failed: {error}"))

    def _report(self, to: actors.ActorRef[Any], report: Written) -> None:
        """Tell ``to`` without ever waiting: a full mailbox gets the report (and those
        after it, in order) from a task of its own, so one busy client never holds up
        the commits of the others, and no report is dropped while its client lives."""
        backlog = self.backlogs.get(to)
        if backlog is None:
            try:
                to.tell_nowait(report)
                return
            except actors.MailboxFull:
                backlog = self.backlogs[to] = deque()
                self.context.nursery.start_soon(self._send_backlog, to, backlog)
            except actors.ActorStopped:
                return  # gone for good: nobody is left to tell
        backlog.append(report)

    async def _send_backlog(self, to: actors.ActorRef[Any], backlog: deque[Written]) -> None:
        try:
            while backlog:
                await to.send(backlog[0])
                backlog.popleft()
        except actors.ActorStopped:
            pass
        finally:
            del self.backlogs[to]

    async def stopped(self) -> None:
        await self.flush()
