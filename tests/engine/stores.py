"""The stores the engine suite runs on: in memory, a real SQLite file and a real
PostgreSQL database, each behind `ClockHeld`, so the tests that drive time with trio's
autojump clock run unchanged on a store that works in threads or another process.

The autojump clock jumps whenever every task waits; a task waiting on a store's thread
or writer process waits, so without `ClockHeld` a deadline could pass during a commit's
milliseconds. While any store call is in flight, `ClockHeld` lifts the clock's jump
threshold to infinity, so time passes only while the engine waits on the clock itself,
as it would in production, where a commit takes no time on the scale of a deadline.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio
from trio.testing import MockClock

from emit.domain.job import Job
from emit.domain.model import Event, JobStatus, LogLevel
from emit.domain.records import Callback, LogLine, Space, Token
from emit.store.base import Expired, SpaceState, Store
from emit.store.records import Changes

T = TypeVar("T")

_holds: weakref.WeakKeyDictionary[MockClock, tuple[int, float]] = weakref.WeakKeyDictionary()
"""Per mock clock: how many store calls are in flight, and its threshold before them."""


@asynccontextmanager
async def clock_held() -> AsyncIterator[None]:
    """Keep the autojump clock still for the block (nothing where the clock is real)."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, MockClock):
        yield
        return
    count, threshold = _holds.get(clock, (0, clock.autojump_threshold))
    if count == 0:
        clock.autojump_threshold = math.inf
    _holds[clock] = (count + 1, threshold)
    try:
        yield
    finally:
        count, threshold = _holds[clock]
        _holds[clock] = (count - 1, threshold)
        if count == 1:
            clock.autojump_threshold = threshold


class ClockHeld(Store):
    """``inner``, every call made with the clock held. Its other attributes (``failure``,
    ``path``) read through."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _held(self, call: Callable[[], Awaitable[T]]) -> T:
        async with clock_held():
            return await call()

    async def open(self) -> None:
        await self._held(self.inner.open)

    async def close(self) -> None:
        await self._held(self.inner.close)

    async def commit(self, batches: list[Changes]) -> None:
        await self._held(lambda: self.inner.commit(batches))

    async def check_writable(self) -> None:
        await self._held(self.inner.check_writable)

    async def load_space(self, space_id: str) -> SpaceState | None:
        return await self._held(lambda: self.inner.load_space(space_id))

    async def get_space(self, space_id: str) -> Space | None:
        return await self._held(lambda: self.inner.get_space(space_id))

    async def list_spaces(self) -> list[Space]:
        return await self._held(self.inner.list_spaces)

    async def token_by_hash(self, key_hash: str) -> Token | None:
        return await self._held(lambda: self.inner.token_by_hash(key_hash))

    async def live_key_hashes(self, key_hashes: set[str]) -> set[str]:
        return await self._held(lambda: self.inner.live_key_hashes(key_hashes))

    async def list_tokens(self, space_id: str) -> list[Token]:
        return await self._held(lambda: self.inner.list_tokens(space_id))

    async def get_job(self, job_id: str) -> Job | None:
        return await self._held(lambda: self.inner.get_job(job_id))

    async def get_job_with_events(self, job_id: str) -> tuple[Job, list[Event]] | None:
        return await self._held(lambda: self.inner.get_job_with_events(job_id))

    async def list_jobs(
        self,
        space_id: str,
        *,
        status: JobStatus | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        return await self._held(
            lambda: self.inner.list_jobs(
                space_id, status=status, name=name, limit=limit, offset=offset
            )
        )

    async def get_logs(
        self, job_id: str, *, after: int, limit: int, level: LogLevel | None, q: str | None
    ) -> list[LogLine]:
        return await self._held(
            lambda: self.inner.get_logs(job_id, after=after, limit=limit, level=level, q=q)
        )

    async def expired_jobs(
        self, space_id: str, before: Mapping[JobStatus, float], limit: int
    ) -> list[Expired]:
        return await self._held(lambda: self.inner.expired_jobs(space_id, before, limit))

    async def pending_callbacks(self) -> list[Callback]:
        return await self._held(self.inner.pending_callbacks)

    async def get_callback(self, callback_id: str) -> Callback | None:
        return await self._held(lambda: self.inner.get_callback(callback_id))
