"""The SQLite store: WAL journal, one writer connection in a process of its own, a reader
connection per worker thread.

Writes go to the writer process (`_writer_process.py`), one transaction per message,
one at a time (the store writer actor sends them in order; a lock here makes sure);
see docs/persistence.md for why a process. Reads run in worker threads
(``trio.to_thread``), never on the event loop, and see only committed transactions,
which is what makes "durable before anyone hears of it" hold for every read.

``synchronous`` is FULL by default: a commit returns only once it is on disk, so an
acknowledged change survives power loss. NORMAL (a setting) survives a crash of emit
but may lose the last transactions on power loss, for more commits per second.
"""

from __future__ import annotations

import gc
import logging
import marshal
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..codec import dumps
from ..domain.job import Job
from ..domain.model import Event, JobStatus, LogLevel
from ..domain.records import Callback, LogLine, Space, Token
from ..ids import id_bound
from ._writer_process import PROBE
from .base import Expired, OutcomeUnknown, SpaceState, Store, StoreOpenFailed
from .plan import Step, plan
from .records import (
    JOB_COLUMNS,
    STATE_COLUMNS,
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
from .schema import migrate

T = TypeVar("T")

SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")

_JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
_JOB_WITH_EVENTS = f"SELECT {', '.join(JOB_COLUMNS)}, events FROM jobs"
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, events) "
    f"VALUES ({', '.join('?' * (len(JOB_COLUMNS) + 1))})"
)
_UPDATE_JOB = (  # a job's new events are appended to those its row holds
    f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in STATE_COLUMNS)}, events = events || ? "
    "WHERE id = ?"
)
_INSERT_EVENT = "INSERT INTO job_events VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_LOG = "INSERT INTO job_logs VALUES (?, ?, ?, ?, ?, ?)"
_LIVE = ("scheduled", "pending", "delivered", "running")
_PUT_SPACE = "INSERT OR REPLACE INTO spaces VALUES (?, ?, ?, ?, ?)"
_DELETE_SPACE = (
    "DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE space_id = ?)",
    "DELETE FROM job_logs WHERE job_id IN (SELECT id FROM jobs WHERE space_id = ?)",
    "DELETE FROM jobs WHERE space_id = ?",
    "DELETE FROM callbacks WHERE space_id = ?",
    "DELETE FROM tokens WHERE space_id = ?",
    "DELETE FROM spaces WHERE id = ?",
)
_DELETE_JOB = (
    "DELETE FROM job_events WHERE job_id = ?",
    "DELETE FROM job_logs WHERE job_id = ?",
    "DELETE FROM callbacks WHERE job_id = ?",
    "DELETE FROM jobs WHERE id = ?",
)
_RECLAIM = "PRAGMA incremental_vacuum"
"""Run once per page: each run gives one free page back to the file system (sqlite3
steps a statement that returns no rows once, and this pragma frees a page a step)."""
_EXPIRED = (
    # By the status index, in id order, which is creation order: a job that finished
    # before the cutoff was created before it, so ids past the cutoff's are never read.
    "SELECT id, idempotency_key FROM jobs WHERE space_id = ? AND status = ? AND id < ? "
    "AND completed_at < ? AND id NOT IN "
    "(SELECT job_id FROM callbacks WHERE state = 'pending') ORDER BY id LIMIT ?"
)
_PUT_TOKEN = "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_REVOKE_TOKEN = "UPDATE tokens SET revoked_at = ? WHERE id = ?"
_TOKEN_USED = "UPDATE tokens SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?"
_PUT_CALLBACK = "INSERT OR REPLACE INTO callbacks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SQL: dict[Step, tuple[str, ...]] = {
    Step.INSERT_JOBS: (_INSERT_JOB,),
    Step.UPDATE_JOBS: (_UPDATE_JOB,),
    Step.INSERT_EVENTS: (_INSERT_EVENT,),
    Step.INSERT_LOGS: (_INSERT_LOG,),
    Step.PUT_CALLBACKS: (_PUT_CALLBACK,),
    Step.PUT_SPACES: (_PUT_SPACE,),
    Step.DELETE_SPACE: _DELETE_SPACE,
    Step.PUT_TOKENS: (_PUT_TOKEN,),
    Step.REVOKE_TOKENS: (_REVOKE_TOKEN,),
    Step.NOTE_TOKEN_USES: (_TOKEN_USED,),
    Step.DELETE_JOBS: _DELETE_JOB,
    Step.RECLAIM_PAGES: (_RECLAIM,),
}
_LENGTH = struct.Struct("<Q")
_WRITER_PROCESS = Path(__file__).with_name("_writer_process.py")

logger = logging.getLogger("emit.store")


class WriterGone(sqlite3.OperationalError, OutcomeUnknown):
    """The writer process ended before answering: the transaction may or may not have
    committed, as after a crash. The next commit starts a new process."""


class CommitUncertain(sqlite3.OperationalError, OutcomeUnknown):
    """COMMIT failed with an error after which SQLite cannot say whether the transaction
    reached the disk (an I/O error): the change may have been saved. The writer process
    rolled back what was still open, and takes the next transaction."""


Statement = tuple[str, list[tuple[Any, ...]]]


def _steps(batches: list[Changes]) -> list[Statement]:
    """One transaction's statements for the writer process, in `plan`'s order."""
    return [(sql, rows) for kind, rows in plan(batches) for sql in _SQL[kind]]


def _encode(steps: list[Statement]) -> bytes:
    """A transaction for the writer process. marshal takes only the exact types; a
    subclass of str, int or float (an enum a caller passed as a name or a priority, say)
    makes it refuse, and the rows are then written with those values made plain."""
    try:
        return marshal.dumps(steps)
    except ValueError:
        return marshal.dumps(
            [(sql, [tuple(map(_plain, row)) for row in rows]) for sql, rows in steps]
        )


def _plain(value: Any) -> Any:
    if value is None or type(value) in _EXACT:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # the str itself, not the subclass's __str__
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    raise TypeError(f"a row holds a value the store cannot write: {value!r}")


_EXACT = frozenset({str, int, float, bytes, bool})


class SQLiteStore(Store):
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self._writer: trio.SocketStream | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._commit_lock = trio.Lock()
        self._closed = False
        self._abandoned: list[subprocess.Popen[bytes]] = []
        self.writer_settings: dict[str, Any] = {}
        """How the writer process opened the database (journal_mode, synchronous)."""
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.failure: str | None = None
        """Why the last transaction that wrote failed, until one succeeds (readiness)."""

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        connection.execute("PRAGMA busy_timeout = 30000")
        return connection

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        if writer.execute("PRAGMA page_count").fetchone()[0] == 0:
            # A new database: deleted jobs' pages can go back to the file system (the
            # sweep's `Changes.reclaim_pages`). Only possible before the first table,
            # and before WAL mode writes the header.
            writer.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for {self.path} (got {mode})")
        writer.execute(f"PRAGMA synchronous = {self.synchronous}")
        try:
            migrate(writer)
        finally:
            writer.close()  # from here on, the writer process is the one that writes

    async def open(self) -> None:
        self._closed = False
        try:
            await trio.to_thread.run_sync(self._open)
            await self._start_writer()
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreOpenFailed(f"cannot open the store {self.path}: {cause}") from exc

    async def close(self) -> None:
        with trio.CancelScope(shield=True):  # also when the runtime is left by cancellation
            async with self._commit_lock:
                self._closed = True
                await self._stop_writer()
                for process in self._abandoned:
                    await trio.to_thread.run_sync(process.wait)
                self._abandoned.clear()

        def close_all() -> None:
            with self._readers_lock:
                for reader in self._readers:
                    reader.close()
                self._readers.clear()

        await trio.to_thread.run_sync(close_all)

    # ----------------------------------------------------------------------- writes

    async def commit(self, batches: list[Changes]) -> None:
        steps = _steps(batches)
        # An empty transaction never touches the disk: it proves nothing.
        await self._tracked(_encode(steps), proves=bool(steps))

    async def check_writable(self) -> None:
        if self.failure is not None:
            await self._tracked(marshal.dumps(PROBE), proves=True)

    async def _tracked(self, body: bytes, *, proves: bool) -> None:
        """`_request`, keeping `failure` (readiness) up to date with how it went."""
        try:
            await self._request(body)
        except Exception as error:
            self._failed(error)
            raise
        if proves:
            self._succeeded()

    def _failed(self, error: Exception) -> None:
        message = str(error)
        if message != self.failure:  # once per cause, not once per refused write
            logger.error("the store cannot write to %s: %s", self.path, message)
        self.failure = message

    def _succeeded(self) -> None:
        if self.failure is not None:
            failure = self.failure
            logger.warning("the store writes to %s again (it failed: %s)", self.path, failure)
            self.failure = None

    async def _request(self, body: bytes) -> None:
        """Send one request to the writer process; return once it is done, or raise the
        error it answered (`WriterGone` if it ended before answering)."""
        # Shielded: once a transaction is sent, its answer is read, whatever happens to
        # the caller, so the next one never reads it by mistake (an in-process thread
        # could not be cancelled either).
        with trio.CancelScope(shield=True):
            async with self._commit_lock:
                if self._closed:
                    raise RuntimeError("the store is closed")
                writer = self._writer or await self._start_writer()
                try:
                    await writer.send_all(_LENGTH.pack(len(body)) + body)  # one send, not two
                    answer = marshal.loads(await self._receive(writer))
                except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError) as exc:
                    await self._stop_writer()
                    raise WriterGone(
                        "the store's writer process ended before it answered: the change "
                        "may or may not have been saved"
                    ) from exc
                except BaseException:
                    # Anything else between sending and reading the answer (an interrupt,
                    # memory): the answer would be read by the next commit. Drop this
                    # process; the next commit starts another.
                    self._abandon_writer()
                    raise
                if answer is not None and answer[3]:
                    await self._stop_writer()  # it could not roll back, and has ended
        if answer is not None:
            name, message, unknown, _ = answer
            if unknown:
                raise CommitUncertain(f"{message}: the change may or may not have been saved")
            error = getattr(sqlite3, name, None)
            if isinstance(error, type) and issubclass(error, Exception):
                raise error(message)
            raise sqlite3.OperationalError(f"{name}: {message}")

    async def _start_writer(self) -> trio.SocketStream:
        ours, theirs = socket.socketpair()
        try:
            # Forked from this thread, the event loop's, on purpose: the child dies when the
            # thread that forked it ends (PR_SET_PDEATHSIG follows the thread, not the
            # process), and trio.lowlevel.open_process forks in a worker thread, which
            # ends after 10 s idle, killing the writer with it. A fork+exec here blocks the
            # loop for a few ms, once per store open.
            self._process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, str(_WRITER_PROCESS), str(self.path), self.synchronous,
                 str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            theirs.close()
        writer = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self._writer, self._buffer = writer, bytearray()
        try:
            hello = marshal.loads(await self._receive(writer))
        except EOFError:
            hello = ["OSError", "the writer process ended at start"]
        if not isinstance(hello, dict):
            await self._stop_writer()
            raise RuntimeError(f"its writer process could not open it: {': '.join(hello)}")
        self.writer_settings = hello
        return writer

    async def _receive(self, writer: trio.SocketStream) -> bytes:
        buffer = self._buffer
        while len(buffer) < _LENGTH.size:
            await self._fill(writer, buffer)
        size = _LENGTH.unpack_from(buffer)[0] + _LENGTH.size
        while len(buffer) < size:
            await self._fill(writer, buffer)
        body = bytes(buffer[_LENGTH.size : size])
        del buffer[:size]
        return body

    @staticmethod
    async def _fill(writer: trio.SocketStream, buffer: bytearray) -> None:
        chunk = await writer.receive_some()
        if not chunk:
            raise EOFError
        buffer += chunk

    def _abandon_writer(self) -> None:
        """Close our end now, without waiting: the process exits on its own (end of
        stream); `close` reaps it."""
        writer, process = self._writer, self._process
        self._writer = self._process = None
        if writer is not None:
            writer.socket.close()
        if process is not None:
            self._abandoned.append(process)

    async def _stop_writer(self) -> None:
        """Close our end: the process finishes what it has and exits; wait for it."""
        writer, process = self._writer, self._process
        self._writer = self._process = None
        if writer is not None:
            await writer.aclose()
        if process is not None:
            await trio.to_thread.run_sync(process.wait)

    # ------------------------------------------------------------------------ reads

    def _reader(self) -> sqlite3.Connection:
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self._connect()
            reader.execute("PRAGMA query_only = 1")
            self._local.reader = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(lambda: work(self._reader()))

    async def load_space(self, space_id: str) -> SpaceState | None:
        def load(db: sqlite3.Connection) -> SpaceState | None:
            row = db.execute("SELECT * FROM spaces WHERE id = ?", (space_id,)).fetchone()
            if row is None:
                return None
            # One read transaction, so the jobs, counts and keys agree with each other.
            # Live jobs come by the status index, in no particular order: the queue orders
            # them by (priority, seq) itself. The collector is paused meanwhile: a million
            # new objects would set it off again and again, for no garbage.
            db.execute("BEGIN")
            names: dict[str, str] = {}
            collecting = gc.isenabled()
            gc.disable()
            try:
                live = [
                    job_from_row(r, names)
                    for r in db.execute(
                        f"{_JOB_SELECT} WHERE space_id = ? AND status IN (?, ?, ?, ?)",
                        (space_id, *_LIVE),
                    )
                ]
                counts = {status: 0 for status in JobStatus}
                for status, n in db.execute(
                    "SELECT status, count(*) FROM jobs WHERE space_id = ? GROUP BY status",
                    (space_id,),
                ):
                    counts[JobStatus(status)] = n
                max_seq = db.execute(
                    "SELECT coalesce(max(seq), 0) FROM jobs WHERE space_id = ?", (space_id,)
                ).fetchone()[0]
                keys = dict(
                    db.execute(
                        "SELECT idempotency_key, id FROM jobs "
                        "WHERE space_id = ? AND idempotency_key IS NOT NULL",
                        (space_id,),
                    ).fetchall()
                )
            finally:
                if collecting:
                    gc.enable()
                db.execute("COMMIT")
            return SpaceState(space_from_row(row), live, counts, max_seq, keys)

        return await self._read(load)

    async def get_space(self, space_id: str) -> Space | None:
        def get(db: sqlite3.Connection) -> Space | None:
            row = db.execute("SELECT * FROM spaces WHERE id = ?", (space_id,)).fetchone()
            return None if row is None else space_from_row(row)

        return await self._read(get)

    async def list_spaces(self) -> list[Space]:
        return await self._read(
            lambda db: [space_from_row(r) for r in db.execute("SELECT * FROM spaces ORDER BY id")]
        )

    async def token_by_hash(self, key_hash: str) -> Token | None:
        def get(db: sqlite3.Connection) -> Token | None:
            row = db.execute("SELECT * FROM tokens WHERE key_hash = ?", (key_hash,)).fetchone()
            return None if row is None else token_from_row(row)

        return await self._read(get)

    async def live_key_hashes(self, key_hashes: set[str]) -> set[str]:
        def get(db: sqlite3.Connection) -> set[str]:
            rows = db.execute(
                "SELECT key_hash FROM tokens WHERE revoked_at IS NULL "
                "AND key_hash IN (SELECT value FROM json_each(?))",
                (dumps(sorted(key_hashes)),),
            )
            return {row[0] for row in rows}

        return await self._read(get)

    async def list_tokens(self, space_id: str) -> list[Token]:
        return await self._read(
            lambda db: [
                token_from_row(r)
                for r in db.execute(
                    "SELECT * FROM tokens WHERE space_id = ? ORDER BY id", (space_id,)
                )
            ]
        )

    async def get_job(self, job_id: str) -> Job | None:
        def get(db: sqlite3.Connection) -> Job | None:
            row = db.execute(f"{_JOB_SELECT} WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else job_from_row(row)

        return await self._read(get)

    async def get_job_with_events(self, job_id: str) -> tuple[Job, list[Event]] | None:
        def get(db: sqlite3.Connection) -> tuple[Job, list[Event]] | None:
            db.execute("BEGIN")  # one read: the job, its row's events and the others agree
            try:
                row = db.execute(f"{_JOB_WITH_EVENTS} WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    return None
                rows: list[EventRow] = db.execute(
                    "SELECT * FROM job_events WHERE job_id = ? ORDER BY seq", (job_id,)
                ).fetchall()
            finally:
                db.execute("COMMIT")
            return job_from_row(row[:-1]), job_events(row[-1], rows)

        return await self._read(get)

    async def list_jobs(
        self,
        space_id: str,
        *,
        status: JobStatus | None,
        name: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Job], int]:
        where, params = jobs_where(space_id, status, name, "?")

        def query(db: sqlite3.Connection) -> tuple[list[Job], int]:
            db.execute("BEGIN")
            try:
                total = db.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0]
                rows = db.execute(
                    f"{_JOB_SELECT} WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                    [*params, limit, offset],
                ).fetchall()
            finally:
                db.execute("COMMIT")
            return [job_from_row(row) for row in rows], total

        return await self._read(query)

    async def get_logs(
        self, job_id: str, *, after: int, limit: int, level: LogLevel | None, q: str | None
    ) -> list[LogLine]:
        where = "job_id = ? AND seq > ?"
        params: list[Any] = [job_id, after]
        if level is not None:
            where += " AND level >= ?"
            params.append(int(level))
        if q is not None:
            where += " AND instr(message, ?) > 0"
            params.append(q)

        def query(db: sqlite3.Connection) -> list[LogLine]:
            rows: list[LogRow] = db.execute(
                f"SELECT * FROM job_logs WHERE {where} ORDER BY seq LIMIT ?", [*params, limit]
            ).fetchall()
            return [log_from_row(row) for row in rows]

        return await self._read(query)

    async def expired_jobs(
        self, space_id: str, before: Mapping[JobStatus, float], limit: int
    ) -> list[Expired]:
        def read(db: sqlite3.Connection) -> list[Expired]:
            found: list[Expired] = []
            db.execute("BEGIN")
            try:
                for status, cutoff in sorted(before.items()):
                    if len(found) >= limit:
                        break
                    rows = db.execute(
                        _EXPIRED,
                        (space_id, status.value, id_bound(cutoff), cutoff, limit - len(found)),
                    )
                    found.extend(Expired(job_id, status, key) for job_id, key in rows)
            finally:
                db.execute("COMMIT")
            return found

        return await self._read(read)

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
        def get(db: sqlite3.Connection) -> Callback | None:
            row = db.execute("SELECT * FROM callbacks WHERE id = ?", (callback_id,)).fetchone()
            return None if row is None else callback_from_row(row)

        return await self._read(get)
