"""The SQLite store: WAL journal, one writer connection, a reader connection per thread.

SQLite work runs in worker threads (``trio.to_thread``), never on the event loop. The
writer connection is used by one commit at a time (the store writer actor guarantees
it); readers see only committed transactions, which is what makes "durable before
anyone hears of it" hold for every read.

``synchronous`` is FULL by default: a commit returns only once it is on disk, so an
acknowledged change survives power loss. NORMAL (a setting) survives a crash of emit
but may lose the last transactions on power loss, for more commits per second.
"""

from __future__ import annotations

import gc
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from ..codec import dumps, loads
from ..domain.model import Event, Job, JobStatus, LogLevel
from .base import SpaceState, Store
from .records import (
    JOB_COLUMNS,
    STATE_COLUMNS,
    Callback,
    Changes,
    EventRow,
    LogLine,
    LogRow,
    Space,
    Token,
    callback_from_row,
    event_from_row,
    job_from_row,
    log_from_row,
)
from .schema import migrate

T = TypeVar("T")

SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def _null(value: None) -> None:
    return value


# sqlite3 binds int, float and str directly but looks None up as an adaptable object,
# failing two attribute lookups each time: about 0.4 µs per NULL parameter, and a job's
# insert and updates bind some twenty-five NULLs, in the writer thread with the GIL
# held. A registered adapter is one dict hit. It is process-wide, and returns None
# unchanged, so it changes nothing for other users of sqlite3 in the process.
sqlite3.register_adapter(type(None), _null)
_JOB_SELECT = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
)
_UPDATE_JOB = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in STATE_COLUMNS)} WHERE id = ?"
_INSERT_EVENT = "INSERT INTO job_events VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_EVENTS = (
    "INSERT INTO job_events SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
    "value->>5 FROM json_each(?)"
)
"""All of a transaction's events in one statement, from one JSON array of rows: one
trip through SQLite instead of one per row, so the writer thread releases the GIL once
for the whole insert rather than once per row (each reacquire can wait out the event
loop's switch interval)."""
_INSERT_LOG = "INSERT INTO job_logs VALUES (?, ?, ?, ?, ?, ?)"
_LIVE = ("scheduled", "pending", "delivered", "running")


def _space(row: tuple[Any, ...]) -> Space:
    return Space(row[0], row[1], row[2], row[3], loads(row[4]))


def _token(row: tuple[Any, ...]) -> Token:
    return Token(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        frozenset(loads(row[5])),
        row[6],
        row[7],
        bool(row[8]),
    )


class SQLiteStore(Store):
    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        connection.execute("PRAGMA busy_timeout = 30000")
        return connection

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for {self.path} (got {mode})")
        writer.execute(f"PRAGMA synchronous = {self.synchronous}")
        migrate(writer)
        self._writer = writer

    async def open(self) -> None:
        await trio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        def close_all() -> None:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            with self._readers_lock:
                for reader in self._readers:
                    reader.close()
                self._readers.clear()

        await trio.to_thread.run_sync(close_all)

    # ----------------------------------------------------------------------- writes

    def _apply(self, batches: list[Changes]) -> None:
        db = self._writer
        if db is None:
            raise RuntimeError("the store is closed")
        db.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                self._apply_one(db, batch)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _apply_one(db: sqlite3.Connection, batch: Changes) -> None:
        for space in batch.spaces:
            db.execute(
                "INSERT OR REPLACE INTO spaces VALUES (?, ?, ?, ?, ?)",
                (space.id, space.name, space.public_token, space.created_at, dumps(space.settings)),
            )
        for space_id in batch.deleted_spaces:
            db.execute(
                "DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE space_id = ?)",
                (space_id,),
            )
            db.execute(
                "DELETE FROM job_logs WHERE job_id IN (SELECT id FROM jobs WHERE space_id = ?)",
                (space_id,),
            )
            db.execute("DELETE FROM jobs WHERE space_id = ?", (space_id,))
            db.execute("DELETE FROM callbacks WHERE space_id = ?", (space_id,))
            db.execute("DELETE FROM tokens WHERE space_id = ?", (space_id,))
            db.execute("DELETE FROM spaces WHERE id = ?", (space_id,))
        for token in batch.tokens:
            db.execute(
                "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token.id,
                    token.space_id,
                    token.name,
                    token.prefix,
                    token.key_hash,
                    dumps(sorted(token.scopes)),
                    token.created_at,
                    token.revoked_at,
                    int(token.public),
                ),
            )
        if batch.revoked_tokens:
            db.executemany(
                "UPDATE tokens SET revoked_at = ? WHERE id = ?",
                [(at, token_id) for token_id, at in batch.revoked_tokens],
            )
        if batch.inserts:
            db.executemany(_INSERT_JOB, batch.inserts)
        if batch.updates:
            db.executemany(_UPDATE_JOB, batch.updates)
        if batch.events:
            db.execute(_INSERT_EVENTS, (orjson.dumps(batch.events),))
        if batch.logs:
            db.executemany(_INSERT_LOG, batch.logs)
        if batch.callbacks:
            db.executemany(
                "INSERT OR REPLACE INTO callbacks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [callback.row() for callback in batch.callbacks],
            )

    async def commit(self, batches: list[Changes]) -> None:
        await trio.to_thread.run_sync(self._apply, batches)

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
            return SpaceState(_space(row), live, counts, max_seq, keys)

        return await self._read(load)

    async def get_space(self, space_id: str) -> Space | None:
        def get(db: sqlite3.Connection) -> Space | None:
            row = db.execute("SELECT * FROM spaces WHERE id = ?", (space_id,)).fetchone()
            return None if row is None else _space(row)

        return await self._read(get)

    async def list_spaces(self) -> list[Space]:
        return await self._read(
            lambda db: [_space(r) for r in db.execute("SELECT * FROM spaces ORDER BY id")]
        )

    async def token_by_hash(self, key_hash: str) -> Token | None:
        def get(db: sqlite3.Connection) -> Token | None:
            row = db.execute("SELECT * FROM tokens WHERE key_hash = ?", (key_hash,)).fetchone()
            return None if row is None else _token(row)

        return await self._read(get)

    async def list_tokens(self, space_id: str) -> list[Token]:
        return await self._read(
            lambda db: [
                _token(r)
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

    async def get_events(self, job_id: str) -> list[Event]:
        def get(db: sqlite3.Connection) -> list[Event]:
            rows: list[EventRow] = db.execute(
                "SELECT * FROM job_events WHERE job_id = ? ORDER BY seq", (job_id,)
            ).fetchall()
            return [event_from_row(row) for row in rows]

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
        where = "space_id = ?"
        params: list[Any] = [space_id]
        if status is not None:
            where += " AND status = ?"
            params.append(status.value)
        if name is not None:
            where += " AND name = ?"
            params.append(name)

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
