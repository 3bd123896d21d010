"""A store that keeps everything in memory, with no threads: for tests on trio's
MockClock (the autojump clock would jump while a thread works) and for embedding with
``open_runtime(None)``. It keeps rows, not live objects, exactly as SQLite would."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import trio

from ..domain.job import Job
from ..domain.model import FINAL, Event, JobStatus, LogLevel
from ..domain.records import Callback, LogLine, Space, Token
from .base import Expired, Fenced, SpaceState, Store
from .records import (
    JOB_COLUMNS,
    STATE_COLUMNS,
    Changes,
    job_events,
    job_from_row,
    log_from_row,
)


class MemoryStore(Store):
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[tuple[Any, ...]]] = {}
        self.logs: dict[str, list[tuple[Any, ...]]] = {}
        self.spaces: dict[str, Space] = {}
        self.tokens: dict[str, Token] = {}
        self.callbacks: dict[str, Callback] = {}
        self.commits = 0
        """How many transactions were committed (group commit shows as fewer of them)."""
        self.fail_next: Exception | None = None
        """Tests set this to make the next commit fail as a disk would."""
        self.owners: dict[str, int] | None = None
        """Tests set this to act as a store several nodes share: space id → the epoch
        this node owns it at. A commit holding writes fenced for a space at another epoch
        (or not owned) is then refused whole (`Fenced`), as a shared store does."""

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def commit(self, batches: list[Changes]) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if self.owners is not None:
            owners = self.owners
            fenced = {
                b.fence[0]: f"is not held at epoch {b.fence[1]}"
                for b in batches
                if b.fence is not None and owners.get(b.fence[0]) != b.fence[1]
            }
            if fenced:
                raise Fenced(fenced)
        for batch in batches:
            for space in batch.spaces:
                self.spaces[space.id] = space
            for space_id in batch.deleted_spaces:
                self._delete_space(space_id)
            for token in batch.tokens:
                self.tokens[token.id] = token
            for token_id, at in batch.revoked_tokens:
                self.tokens[token_id] = replace(self.tokens[token_id], revoked_at=at)
            for token_id, at in batch.token_uses:
                used = self.tokens.get(token_id)  # gone with its space: nothing to note
                if used is not None and (used.last_used_at or 0) < at:
                    self.tokens[token_id] = replace(used, last_used_at=at)
            for row in batch.inserts:
                self.jobs[row[0]] = dict(zip((*JOB_COLUMNS, "events"), row, strict=True))
            for row in batch.updates:
                job = self.jobs[row[-1]]
                job.update(zip(STATE_COLUMNS, row[:-2], strict=True))
                job["events"] += row[-2]
            for row in batch.events:
                self.events.setdefault(row[0], []).append(row)
            for row in batch.logs:
                self.logs.setdefault(row[0], []).append(row)
            for callback in batch.callbacks:
                self.callbacks[callback.id] = callback
            for job_id in batch.deleted_jobs:
                self._delete_job(job_id)
        self.commits += 1

    def _delete_job(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.events.pop(job_id, None)
        self.logs.pop(job_id, None)
        for callback_id in [c.id for c in self.callbacks.values() if c.job_id == job_id]:
            del self.callbacks[callback_id]

    def _delete_space(self, space_id: str) -> None:
        self.spaces.pop(space_id, None)
        for callback_id in [c.id for c in self.callbacks.values() if c.space_id == space_id]:
            del self.callbacks[callback_id]
        for token_id in [t.id for t in self.tokens.values() if t.space_id == space_id]:
            del self.tokens[token_id]
        for job_id in [j for j, row in self.jobs.items() if row["space_id"] == space_id]:
            del self.jobs[job_id]
            self.events.pop(job_id, None)
            self.logs.pop(job_id, None)

    def _job(self, row: dict[str, Any]) -> Job:
        return job_from_row(tuple(row[column] for column in JOB_COLUMNS))

    async def load_space(self, space_id: str) -> SpaceState | None:
        await trio.lowlevel.checkpoint()
        space = self.spaces.get(space_id)
        if space is None:
            return None
        rows = sorted(
            (row for row in self.jobs.values() if row["space_id"] == space_id),
            key=lambda row: row["seq"],
        )
        counts = {status: 0 for status in JobStatus}
        for row in rows:
            counts[JobStatus(row["status"])] += 1
        return SpaceState(
            space=space,
            live_jobs=[self._job(row) for row in rows if JobStatus(row["status"]) not in FINAL],
            counts=counts,
            max_seq=max((row["seq"] for row in rows), default=0),
            idempotency={
                row["idempotency_key"]: row["id"] for row in rows if row["idempotency_key"]
            },
        )

    async def get_space(self, space_id: str) -> Space | None:
        await trio.lowlevel.checkpoint()
        return self.spaces.get(space_id)

    async def list_spaces(self) -> list[Space]:
        await trio.lowlevel.checkpoint()
        return sorted(self.spaces.values(), key=lambda space: space.id)

    async def token_by_hash(self, key_hash: str) -> Token | None:
        await trio.lowlevel.checkpoint()
        return next((t for t in self.tokens.values() if t.key_hash == key_hash), None)

    async def live_key_hashes(self, key_hashes: set[str]) -> set[str]:
        await trio.lowlevel.checkpoint()
        return {
            t.key_hash
            for t in self.tokens.values()
            if t.key_hash in key_hashes and t.revoked_at is None
        }

    async def list_tokens(self, space_id: str) -> list[Token]:
        await trio.lowlevel.checkpoint()
        return sorted(
            (t for t in self.tokens.values() if t.space_id == space_id), key=lambda t: t.id
        )

    async def get_job(self, job_id: str) -> Job | None:
        await trio.lowlevel.checkpoint()
        row = self.jobs.get(job_id)
        return None if row is None else self._job(row)

    async def get_job_with_events(self, job_id: str) -> tuple[Job, list[Event]] | None:
        await trio.lowlevel.checkpoint()
        row = self.jobs.get(job_id)
        if row is None:
            return None
        return self._job(row), job_events(row["events"], self.events.get(job_id, []))

    async def list_jobs(
        self,
        space_id: str,
        *,
        status: JobStatus | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        await trio.lowlevel.checkpoint()
        rows = [
            row
            for row in self.jobs.values()
            if row["space_id"] == space_id
            and (status is None or row["status"] == status.value)
            and (name is None or row["name"] == name)
        ]
        rows.sort(key=lambda row: row["id"], reverse=True)
        return [self._job(row) for row in rows[offset : offset + limit]], len(rows)

    async def get_logs(
        self, job_id: str, *, after: int, limit: int, level: LogLevel | None, q: str | None
    ) -> list[LogLine]:
        await trio.lowlevel.checkpoint()
        lines = [log_from_row(row) for row in self.logs.get(job_id, [])]
        lines = [
            line
            for line in lines
            if line.seq > after
            and (level is None or line.level >= level)
            and (q is None or q in line.message)
        ]
        return lines[:limit]

    async def expired_jobs(
        self, space_id: str, before: Mapping[JobStatus, float], limit: int
    ) -> list[Expired]:
        await trio.lowlevel.checkpoint()
        delivering = {c.job_id for c in self.callbacks.values() if c.state == "pending"}
        found: list[Expired] = []
        for status, cutoff in sorted(before.items()):
            rows = sorted(
                (
                    row
                    for row in self.jobs.values()
                    if row["space_id"] == space_id
                    and row["status"] == status.value
                    and row["completed_at"] < cutoff
                    and row["id"] not in delivering
                ),
                key=lambda row: row["id"],
            )
            found += [Expired(row["id"], status, row["idempotency_key"]) for row in rows]
        return found[:limit]

    async def pending_callbacks(self) -> list[Callback]:
        await trio.lowlevel.checkpoint()
        return sorted(
            (c for c in self.callbacks.values() if c.state == "pending"), key=lambda c: c.next_at
        )

    async def get_callback(self, callback_id: str) -> Callback | None:
        await trio.lowlevel.checkpoint()
        return self.callbacks.get(callback_id)
