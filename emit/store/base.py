"""The interface every store implements: one transaction per commit, reads of committed
state only. `MemoryStore` (tests, embedding with ``None``), `SQLiteStore` (real use) and
`PostgresStore` (several nodes sharing one database) behave the same; the store tests
run against all three."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeGuard

from ..domain.job import Job
from ..domain.model import Event, JobStatus, LogLevel
from ..domain.records import Callback, LogLine, Space, Token
from .records import Changes

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: object) -> TypeGuard[str]:
    """Whether a store's location names a PostgreSQL database (else a directory)."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


class OutcomeUnknown(Exception):
    """A commit failed in a way that leaves its outcome unknown (the writer ended after
    it was sent, before it answered): the change may have been saved. Callers are told
    so, rather than "nothing was accepted"."""


class Fenced(Exception):
    """The store refused a transaction because it held writes of spaces this node no
    longer owns at the epoch they were written for: another node claimed them, or the
    lease expired (`emit.cluster.leases.fence_all`, inside the transaction). Nothing of
    the transaction was applied; the writes of other spaces may be committed again
    without these. Only a store that several nodes share checks fences
    (`Changes.fence`); alone on its store, a node owns every space."""

    def __init__(self, reasons: Mapping[str, str], node_id: str | None = None) -> None:
        self.node_id = node_id
        self.spaces: dict[str, str] = dict(reasons)
        """Each refused space, with why (whose lease it is)."""
        why = "; ".join(f"space {space} {reason}" for space, reason in sorted(reasons.items()))
        super().__init__(f"node {node_id} is fenced off: {why}" if node_id else why)


class StoreOpenFailed(Exception):
    """The store could not be opened: its file or directory cannot be read or written,
    is not a database, is damaged, or has a newer schema; or its database server cannot
    be reached or refuses it. The message names the file (or the database, without its
    password) and the cause, in one line."""


@dataclass(frozen=True, slots=True)
class SpaceState:
    """What a space actor rebuilds itself from on start."""

    space: Space
    live_jobs: list[Job]
    """Every job not yet final, in no particular order (each carries its ``seq``)."""
    counts: dict[JobStatus, int]
    max_seq: int
    idempotency: dict[str, str]
    """idempotencyKey → job id, for every job of the space that has one."""


class Expired(NamedTuple):
    """A finished job past its retention (`Store.expired_jobs`)."""

    id: str
    status: JobStatus
    idempotency_key: str | None


class Store(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None:
        """Create or migrate the schema; after this the store is ready."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def commit(self, batches: list[Changes]) -> None:
        """Apply every batch in one transaction: all of them become durable, or none."""

    async def check_writable(self) -> None:
        """Raise, with the cause, unless the store can write to its disk now. Cheap while
        writes succeed; after one failed, a real write to find out (readiness: a commit
        of nothing never touches the disk). A store in memory always can."""
        return None

    @abc.abstractmethod
    async def load_space(self, space_id: str) -> SpaceState | None: ...

    @abc.abstractmethod
    async def get_space(self, space_id: str) -> Space | None: ...

    @abc.abstractmethod
    async def list_spaces(self) -> list[Space]: ...

    @abc.abstractmethod
    async def token_by_hash(self, key_hash: str) -> Token | None: ...

    @abc.abstractmethod
    async def live_key_hashes(self, key_hashes: set[str]) -> set[str]:
        """Which of ``key_hashes`` belong to tokens that exist and are not revoked (one
        read, however many)."""

    @abc.abstractmethod
    async def list_tokens(self, space_id: str) -> list[Token]: ...

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    async def get_job_with_events(self, job_id: str) -> tuple[Job, list[Event]] | None:
        """The job and its history as of one commit (two reads could fall either side
        of one, and show a status its events do not have yet)."""

    @abc.abstractmethod
    async def list_jobs(
        self,
        space_id: str,
        *,
        status: JobStatus | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        """A page of the space's jobs, newest first, and how many match in all."""

    @abc.abstractmethod
    async def get_logs(
        self, job_id: str, *, after: int, limit: int, level: LogLevel | None, q: str | None
    ) -> list[LogLine]: ...

    @abc.abstractmethod
    async def expired_jobs(
        self, space_id: str, before: Mapping[JobStatus, float], limit: int
    ) -> list[Expired]:
        """Up to ``limit`` of the space's jobs in a final status of ``before`` that
        finished before its time (wall seconds), oldest first; never one whose webhook
        is still being delivered. A bounded read: the sweep's (docs/persistence.md)."""

    @abc.abstractmethod
    async def pending_callbacks(self) -> list[Callback]:
        """Every callback not yet delivered nor given up (to resume after a restart)."""

    @abc.abstractmethod
    async def get_callback(self, callback_id: str) -> Callback | None: ...
