"""The PostgreSQL store: the same log as the SQLite store, in a database several emit
nodes can share. psycopg 3's blocking API in worker threads (its async API is asyncio's
only): one writer connection that commits the store writer's groups, one at a time, and
a small pool of reader connections.

A commit is one transaction, each of `plan`'s steps one statement (`postgres_writes`),
pipelined, and it returns only once COMMIT has been answered, so nothing is read or
answered before it is durable. A failure before
COMMIT rolls the transaction back and raises the error; a connection lost during COMMIT
leaves its outcome unknown (`CommitUncertain`), and the next commit connects again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg.rows import TupleRow

from ..cluster.leases import fence_all
from ..domain.job import Job
from ..domain.model import Event, JobStatus, LogLevel
from ..domain.records import Callback, LogLine, Space, Token
from ..ids import id_bound
from .base import Expired, Fenced, OutcomeUnknown, SpaceState, Store, StoreOpenFailed
from .plan import Planned, plan
from .postgres_schema import NewerSchema, migrate
from .postgres_writes import Bound, Writes
from .records import (
    JOB_COLUMNS,
    Changes,
    EventRow,
    LogRow,
    callback_from_row,
    job_events,
    job_from_row,
    jobs_where,
    log_from_row,
    space_from_row,
    token_from_row,
)

T = TypeVar("T")
Connection = psycopg.Connection[TupleRow]

READERS = 8
"""Reader connections at most (one at least, kept open)."""
CONNECT_TIMEOUT = 10
"""Seconds to wait for a connection, unless the URL says otherwise (libpq waits forever)."""
IDLE_IN_WRITE = 2.0
"""With nodes sharing the database: seconds a write transaction may stand idle before the
server ends its session. A write is a few round trips back to back; one idle this long
is a node stopped (paused, swapped out) between its fence and its COMMIT, and the fence's
lock on the lease row would keep the next owner from claiming the space for as long as
the node stays stopped. Ended, the transaction commits nothing."""


_JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
_JOB_WITH_EVENTS = f"SELECT {', '.join(JOB_COLUMNS)}, events FROM jobs"
_LIVE = ["scheduled", "pending", "delivered", "running"]
_EXPIRED = (
    # By the status index, in id order, which is creation order: a job that finished
    # before the cutoff was created before it, so ids past the cutoff's are never read.
    "SELECT id, idempotency_key FROM jobs WHERE space_id = %s AND status = %s AND id < %s "
    "AND completed_at < %s AND NOT EXISTS (SELECT FROM callbacks "
    "WHERE callbacks.job_id = jobs.id AND callbacks.state = 'pending') ORDER BY id LIMIT %s"
)
_PROBE: list[Bound] = [("UPDATE schema_version SET version = version", [])]
"""A real write for readiness (`check_writable`): the one row rewritten as it is."""

logger = logging.getLogger("emit.store")


class CommitUncertain(psycopg.OperationalError, OutcomeUnknown):
    """The connection was lost while COMMIT was in flight: the transaction may or may
    not have committed. The next commit connects again."""


def redacted(url: str) -> str:
    """The connection URL (or ``key=value`` string) without its password."""
    if "://" not in url:
        return re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", "", url).strip()
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, hosts = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{hosts}"
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "password"]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class PostgresStore(Store):
    def __init__(self, url: str, *, readers: int = READERS, node_id: str | None = None) -> None:
        self.url = url
        self.readers = readers
        self.node_id = node_id
        """With nodes sharing the database, this node's id: every write of a space then
        checks, inside its transaction, that this node holds the space at the epoch the
        write carries (`Changes.fence`), and is refused whole otherwise (`Fenced`).
        None: one node alone, which owns every space."""
        self._writer: Connection | None = None
        self._pool: psycopg_pool.ConnectionPool[Connection] | None = None
        self._writes: Writes | None = None
        self._commit_lock = trio.Lock()
        self._closed = False
        self.failure: str | None = None
        """Why the last transaction that wrote failed, until one succeeds (readiness)."""

    def describe(self) -> str:
        """The database, as it is safe to print: its URL without the password."""
        return redacted(self.url)

    def __repr__(self) -> str:
        return f"PostgresStore({self.describe()!r})"

    def _settings(self) -> dict[str, Any]:
        given = psycopg.conninfo.conninfo_to_dict(self.url)
        settings: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            settings["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in given:
            settings["application_name"] = "emit"
        if self.node_id is not None:
            idle = f"-c idle_in_transaction_session_timeout={int(IDLE_IN_WRITE * 1000)}"
            settings["options"] = f"{given.get('options', '')} {idle}".strip()
        return settings

    def _connect(self) -> Connection:
        return psycopg.connect(self.url, **self._settings())

    # ------------------------------------------------------------- open and close

    def _open(self) -> None:
        writer = self._connect()
        try:
            migrate(writer)
            columns = writer.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
            types: dict[str, dict[str, str]] = {}
            for table, column, kind in columns:
                types.setdefault(table, {})[column] = kind
            writes = Writes(types)
            pool: psycopg_pool.ConnectionPool[Connection] = psycopg_pool.ConnectionPool(
                self.url,
                kwargs=self._settings(),
                min_size=1,
                max_size=max(1, self.readers),
                open=False,
                name="emit-store-readers",
                timeout=CONNECT_TIMEOUT,  # a read waits this long for a connection, at most
            )
            try:
                pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            except BaseException:
                pool.close()
                raise
        except BaseException:
            writer.close()
            raise
        self._writer, self._pool, self._writes = writer, pool, writes

    async def open(self) -> None:
        self._closed = False
        try:
            await trio.to_thread.run_sync(self._open)
        except (psycopg.Error, psycopg_pool.PoolTimeout, NewerSchema) as exc:
            raise StoreOpenFailed(
                f"cannot open the store {self.describe()}: {_one_line(exc)}"
            ) from exc

    async def close(self) -> None:
        with trio.CancelScope(shield=True):  # also when the runtime is left by cancellation
            async with self._commit_lock:
                self._closed = True
                writer, pool = self._writer, self._pool
                self._writer = self._pool = None

                def close_all() -> None:
                    if writer is not None:
                        writer.close()
                    if pool is not None:
                        pool.close()

                await trio.to_thread.run_sync(close_all)

    # ------------------------------------------------------------------- writes

    async def commit(self, batches: list[Changes]) -> None:
        steps = plan(batches)
        fences = self._fences(batches)
        # An empty transaction never writes: it proves nothing.
        await self._tracked(lambda: self._statements(steps), proves=bool(steps), fences=fences)

    def _fences(self, batches: list[Changes]) -> dict[str, int]:
        """Each space the group writes, with the epoch its writes carry. Writes of one
        space at two epochs (an incarnation's last writes beside its successor's) are
        refused at the older one here, before anything is sent."""
        if self.node_id is None:
            return {}
        held: dict[str, int] = {}
        stale: dict[str, str] = {}
        for batch in batches:
            if batch.fence is None:
                continue
            space, epoch = batch.fence
            known = held.setdefault(space, epoch)
            if known != epoch:
                stale[space] = f"was written at epochs {min(known, epoch)} and {max(known, epoch)}"
                held[space] = max(known, epoch)
        if stale:
            raise Fenced(stale, self.node_id)
        return held

    def _statements(self, steps: list[Planned]) -> list[Bound]:
        if self._writes is None:
            raise RuntimeError("the store is not open")
        return self._writes.statements(steps)

    async def check_writable(self) -> None:
        if self.failure is not None:
            await self._tracked(lambda: _PROBE, proves=True)

    async def _tracked(
        self,
        statements: Callable[[], list[Bound]],
        *,
        proves: bool,
        fences: Mapping[str, int] | None = None,
    ) -> None:
        """One transaction of ``statements`` (made in the worker thread, off the event
        loop), keeping `failure` (readiness) up to date with how it went."""
        try:
            # Shielded, and the thread is never abandoned: a transaction, once begun,
            # runs to its end and its answer is read, whatever happens to the caller.
            with trio.CancelScope(shield=True):
                async with self._commit_lock:
                    if self._closed:
                        raise RuntimeError("the store is closed")
                    if proves:
                        await trio.to_thread.run_sync(self._transaction, statements, fences)
        except Fenced:
            raise  # the database is fine: another node holds those spaces
        except Exception as error:
            self._failed(error)
            raise
        if proves:
            self._succeeded()

    def _failed(self, error: Exception) -> None:
        message = _one_line(error)
        if message != self.failure:  # once per cause, not once per refused write
            logger.error("the store cannot write to %s: %s", self.describe(), message)
        self.failure = message

    def _succeeded(self) -> None:
        if self.failure is not None:
            failure = self.failure
            logger.warning("the store writes to %s again (it failed: %s)", self.describe(), failure)
            self.failure = None

    def _begin(self) -> Connection:
        """The writer connection, in a new transaction. A connection found broken at
        BEGIN (the server restarted since the last commit, say) has run nothing of this
        transaction: it is replaced, once, by a new one."""
        for attempt in (1, 2):
            writer = self._writer or self._connect()
            self._writer = writer
            try:
                writer.execute("BEGIN")
                return writer
            except psycopg.OperationalError:
                if not writer.broken or attempt == 2:
                    raise
                self._drop_writer()
        raise AssertionError("unreachable")

    def _transaction(
        self, statements: Callable[[], list[Bound]], fences: Mapping[str, int] | None = None
    ) -> None:
        """In a worker thread, under the commit lock: one transaction, all or nothing."""
        bound = statements()
        writer = self._begin()
        try:
            if fences and self.node_id is not None:
                # First: the fence locks the spaces' lease rows until COMMIT, so no
                # other node's claim can come between it and the writes.
                fence_all(writer, self.node_id, fences)
            # Several statements are pipelined (one round trip; an error stops those
            # after it); one is not: a pipeline costs more CPU than it saves there.
            with contextlib.ExitStack() as stack:
                if len(bound) > 1:
                    stack.enter_context(writer.pipeline())
                cursor = stack.enter_context(writer.cursor())
                for sql, params in bound:
                    cursor.execute(sql, params)
        except BaseException:
            self._roll_back(writer)  # never reached COMMIT: nothing was saved
            raise
        try:
            writer.execute("COMMIT")
        except psycopg.Error as exc:
            if writer.broken or writer.closed:
                self._drop_writer()
                raise CommitUncertain(
                    f"{_one_line(exc)}: the change may or may not have been saved"
                ) from exc
            self._roll_back(writer)  # the server refused it: rolled back, nothing saved
            raise
        except BaseException:
            self._drop_writer()  # whatever COMMIT did, this connection's state is unknown
            raise

    def _roll_back(self, writer: Connection) -> None:
        """Leave no transaction open: roll back what is, or drop a connection that
        cannot (the server rolls back what a lost connection left)."""
        if writer.broken or writer.closed:
            self._drop_writer()
            return
        try:
            writer.execute("ROLLBACK")
        except psycopg.Error:
            self._drop_writer()

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    # -------------------------------------------------------------------- reads

    async def _read(self, work: Callable[[Connection], T], *, consistent: bool = False) -> T:
        """``work`` on a reader connection, in a worker thread; ``consistent``: in one
        read-only repeatable-read transaction, so that its statements see one commit."""
        return await trio.to_thread.run_sync(self._read_sync, work, consistent)

    def _read_sync(self, work: Callable[[Connection], T], consistent: bool) -> T:
        pool = self._pool
        if pool is None:
            raise RuntimeError("the store is not open")
        for attempt in (1, 2):
            with pool.connection() as db:
                try:
                    if not consistent:
                        return work(db)
                    with db.transaction():
                        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        return work(db)
                except psycopg.OperationalError:
                    # A pooled connection the server closed since (a restart): the
                    # pool drops it; a read is safe to run again, once, on another.
                    if not db.broken or attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def load_space(self, space_id: str) -> SpaceState | None:
        def load(db: Connection) -> SpaceState | None:
            row = db.execute("SELECT * FROM spaces WHERE id = %s", (space_id,)).fetchone()
            if row is None:
                return None
            # One read transaction (`consistent`), so the jobs, counts and keys agree.
            # The collector is paused meanwhile: a million new objects would set it off
            # again and again, for no garbage.
            names: dict[str, str] = {}
            collecting = gc.isenabled()
            gc.disable()
            try:
                live = [
                    job_from_row(r, names)
                    for r in db.execute(
                        f"{_JOB_SELECT} WHERE space_id = %s AND status = ANY(%s)",
                        (space_id, _LIVE),
                    )
                ]
            finally:
                if collecting:
                    gc.enable()
            counts = {status: 0 for status in JobStatus}
            for status, n in db.execute(
                "SELECT status, count(*) FROM jobs WHERE space_id = %s GROUP BY status",
                (space_id,),
            ):
                counts[JobStatus(status)] = n
            max_seq = db.execute(
                "SELECT coalesce(max(seq), 0) FROM jobs WHERE space_id = %s", (space_id,)
            ).fetchone()
            keys: dict[str, str] = dict(
                db.execute(
                    "SELECT idempotency_key, id FROM jobs "
                    "WHERE space_id = %s AND idempotency_key IS NOT NULL",
                    (space_id,),
                ).fetchall()
            )
            assert max_seq is not None
            return SpaceState(space_from_row(row), live, counts, max_seq[0], keys)

        return await self._read(load, consistent=True)

    async def get_space(self, space_id: str) -> Space | None:
        def get(db: Connection) -> Space | None:
            row = db.execute("SELECT * FROM spaces WHERE id = %s", (space_id,)).fetchone()
            return None if row is None else space_from_row(row)

        return await self._read(get)

    async def list_spaces(self) -> list[Space]:
        return await self._read(
            lambda db: [space_from_row(r) for r in db.execute("SELECT * FROM spaces ORDER BY id")]
        )

    async def token_by_hash(self, key_hash: str) -> Token | None:
        def get(db: Connection) -> Token | None:
            row = db.execute("SELECT * FROM tokens WHERE key_hash = %s", (key_hash,)).fetchone()
            return None if row is None else token_from_row(row)

        return await self._read(get)

    async def live_key_hashes(self, key_hashes: set[str]) -> set[str]:
        def get(db: Connection) -> set[str]:
            rows = db.execute(
                "SELECT key_hash FROM tokens WHERE revoked_at IS NULL AND key_hash = ANY(%s)",
                (sorted(key_hashes),),
            )
            return {row[0] for row in rows}

        return await self._read(get)

    async def list_tokens(self, space_id: str) -> list[Token]:
        return await self._read(
            lambda db: [
                token_from_row(r)
                for r in db.execute(
                    "SELECT * FROM tokens WHERE space_id = %s ORDER BY id", (space_id,)
                )
            ]
        )

    async def get_job(self, job_id: str) -> Job | None:
        def get(db: Connection) -> Job | None:
            row = db.execute(f"{_JOB_SELECT} WHERE id = %s", (job_id,)).fetchone()
            return None if row is None else job_from_row(row)

        return await self._read(get)

    async def get_job_with_events(self, job_id: str) -> tuple[Job, list[Event]] | None:
        def get(db: Connection) -> tuple[Job, list[Event]] | None:
            row = db.execute(f"{_JOB_WITH_EVENTS} WHERE id = %s", (job_id,)).fetchone()
            if row is None:
                return None
            rows: list[EventRow] = db.execute(
                "SELECT * FROM job_events WHERE job_id = %s ORDER BY seq", (job_id,)
            ).fetchall()
            return job_from_row(row[:-1]), job_events(row[-1], rows)

        return await self._read(get, consistent=True)

    async def list_jobs(
        self,
        space_id: str,
        *,
        status: JobStatus | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        where, params = jobs_where(space_id, status, name, "%s")

        def query(db: Connection) -> tuple[list[Job], int]:
            counted = db.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()
            rows = db.execute(
                f"{_JOB_SELECT} WHERE {where} ORDER BY id DESC LIMIT %s OFFSET %s",
                [*params, limit, offset],
            ).fetchall()
            assert counted is not None
            return [job_from_row(row) for row in rows], counted[0]

        return await self._read(query, consistent=True)

    async def get_logs(
        self, job_id: str, *, after: int, limit: int, level: LogLevel | None, q: str | None
    ) -> list[LogLine]:
        where = "job_id = %s AND seq > %s"
        params: list[Any] = [job_id, after]
        if level is not None:
            where += " AND level >= %s"
            params.append(int(level))
        if q is not None:
            where += " AND strpos(message, %s) > 0"  # a substring: no LIKE wildcards
            params.append(q)

        def query(db: Connection) -> list[LogLine]:
            rows: list[LogRow] = db.execute(
                f"SELECT * FROM job_logs WHERE {where} ORDER BY seq LIMIT %s", [*params, limit]
            ).fetchall()
            return [log_from_row(row) for row in rows]

        return await self._read(query)

    async def expired_jobs(
        self, space_id: str, before: Mapping[JobStatus, float], limit: int
    ) -> list[Expired]:
        def read(db: Connection) -> list[Expired]:
            found: list[Expired] = []
            for status, cutoff in sorted(before.items()):
                if len(found) >= limit:
                    break
                rows = db.execute(
                    _EXPIRED,
                    (space_id, status.value, id_bound(cutoff), cutoff, limit - len(found)),
                )
                found.extend(Expired(job_id, status, key) for job_id, key in rows)
            return found

        return await self._read(read, consistent=True)

    async def pending_callbacks(self) -> list[Callback]:
        return await self._read(
            lambda db: [
                callback_from_row(row)
                for row in db.execute(
                    "SELECT * FROM callbacks WHERE state = 'pending' ORDER BY next_at"
                )
            ]
        )

    async def get_callback(self, callback_id: str) -> Callback | None:
        def get(db: Connection) -> Callback | None:
            row = db.execute("SELECT * FROM callbacks WHERE id = %s", (callback_id,)).fetchone()
            return None if row is None else callback_from_row(row)

        return await self._read(get)
