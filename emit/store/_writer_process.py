"""The SQLite store's writer process: the one connection that writes, in a process of
its own, so that its work never waits on the server's GIL (and the server's never on
its). See docs/persistence.md, "The writer process".

Run by `SQLiteStore` as ``python _writer_process.py PATH SYNCHRONOUS FD PARENT_PID`` (by
path, not as a module, so that it imports neither emit nor trio: it starts in a few tens
of ms). FD is its end of a socket pair. Every message either way is framed as an 8-byte
little-endian length and a `marshal` body: the same interpreter runs both ends, and
marshal decodes a transaction's rows about three times faster than JSON would. First
the process says how it opened the database (``{"journal_mode": ..., "synchronous": n}``,
or ``[error class, message]`` and it exits). Then each request is one transaction: a
list of ``(sql, rows)`` steps, each run with ``executemany``; the answer is ``None`` once
the transaction is committed, or ``[error class name, message, unknown, ended]`` once
it is rolled back: ``unknown`` when COMMIT failed in a way that leaves its outcome
unknown (an I/O error), ``ended`` when the transaction could not be rolled back, and
the process ends after answering. A request ``"probe"`` is no transaction: it asks
whether the disk takes a write now (`_probe`). When the parent closes its end, the
process exits.

On Linux the process dies with its parent (``PR_SET_PDEATHSIG``): a transaction in
flight when the server is killed is then either committed or rolled back before any new
server opens the store, never committed behind the back of one that already loaded it.
Elsewhere it only sees the end of the stream, after the transaction in hand. It ignores
SIGINT and SIGTERM: the server stops it, by closing the stream, once it has drained.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import socket
import sqlite3
import struct
import sys

_LENGTH = struct.Struct("<Q")
PROBE = "probe"
"""A request that is not a transaction: `_probe`."""
FAULTS = "EMIT_TEST_WRITER_FAULTS"
"""Test seam: the environment variable naming a fault file (see `_Faulty`)."""


def _receive(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        try:
            chunk = sock.recv(min(size, 1 << 20))
        except ConnectionResetError:
            # The server was killed with data unread on its end: the end of the stream,
            # as a close is (not a traceback in the log of a crash it did not cause).
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


Answer = list[object] | None
"""None once committed, else ``[error class name, message, unknown, ended]``."""


def _send(sock: socket.socket, message: dict[str, object] | Answer) -> None:
    body = marshal.dumps(message)
    sock.sendall(_LENGTH.pack(len(body)) + body)


def _die_with_parent(parent: int) -> None:
    # Ctrl+C and `systemctl stop` signal the whole process group: the server drains on
    # them and closes the store when done, which ends this process (end of stream). Left
    # to the default, this process would die first, under the drain's last writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before we asked
        sys.exit(0)


class _Faulty:
    """A test seam, never set in production: when ``EMIT_TEST_WRITER_FAULTS`` names a
    file, the writer's connection reads it before each statement and fails as it says,
    until the file is gone or empty. SQLite itself runs underneath; only the failure is
    made up, the way SQLite fails:

    - ``write``: every statement but BEGIN, COMMIT and ROLLBACK fails with
      SQLITE_FULL, and the transaction is rolled back (as SQLite does on a full disk);
    - ``commit``: COMMIT of a transaction that wrote fails with SQLITE_IOERR_WRITE and
      leaves the transaction open (as SQLite may, and then its outcome is unknown);
    - ``stuck``: as ``commit``, and ROLLBACK fails too, leaving the connection unusable;
    - ``die``: the process exits at the first statement that would write.

    A transaction that writes nothing never touches the disk, so it never fails here.
    """

    def __init__(self, db: sqlite3.Connection, faults: str) -> None:
        self.db = db
        self.faults = faults
        self.wrote = False

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def _fault(self) -> str:
        try:
            with open(self.faults) as file:
                return file.read().strip()
        except FileNotFoundError:
            return ""

    def _check(self, sql: str) -> None:
        fault = self._fault()
        if sql == "BEGIN IMMEDIATE":
            self.wrote = False
        elif sql == "ROLLBACK":
            if fault == "stuck":
                raise _error("disk I/O error", "SQLITE_IOERR_WRITE", 778)
            self.wrote = False
        elif sql == "COMMIT":
            if fault in ("commit", "stuck") and self.wrote:
                raise _error("disk I/O error", "SQLITE_IOERR_WRITE", 778)
        else:
            self.wrote = True
            if fault == "die":
                os._exit(70)
            if fault == "write":
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise _error("database or disk is full", "SQLITE_FULL", 13)

    def execute(self, sql: str) -> sqlite3.Cursor:
        self._check(sql)
        return self.db.execute(sql)

    def executemany(self, sql: str, rows: list[tuple[object, ...]]) -> sqlite3.Cursor:
        self._check(sql)
        return self.db.executemany(sql, rows)

    def close(self) -> None:
        self.db.close()


def _transaction(
    db: sqlite3.Connection, steps: list[tuple[str, list[tuple[object, ...]]]]
) -> Answer:
    """Run one transaction; None once committed, else the answer for its failure."""
    try:
        db.execute("BEGIN IMMEDIATE")
        for sql, rows in steps:
            db.executemany(sql, rows)
    except Exception as exc:
        return _failed(db, exc, unknown=False)  # never reached COMMIT: not saved
    try:
        db.execute("COMMIT")
    except Exception as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        return _failed(db, exc, unknown=code is None or code & 0xFF not in _NOT_COMMITTED)
    return None


def _probe(db: sqlite3.Connection) -> Answer:
    """Can the store write to its disk now (asked for readiness after a write failed)?
    The log is checkpointed into the database and truncated first: the frames a failed
    transaction left in it would let a small write succeed on a full disk. Then one
    page is rewritten (the schema version, unchanged) and committed."""
    try:
        # A reader in the middle of a long read keeps part of the log; wait for it 1 s at
        # most (not the 30 s a write would), and write beside what is left.
        db.execute("PRAGMA busy_timeout = 1000")
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.execute("PRAGMA busy_timeout = 30000")
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(f"PRAGMA user_version = {int(version)}")
    except Exception as exc:
        return _failed(db, exc, unknown=False)
    try:
        db.execute("COMMIT")
    except Exception as exc:
        return _failed(db, exc, unknown=False)  # nothing to save: no outcome to know
    return None


_NOT_COMMITTED = frozenset({5, 6, 7, 13})
"""SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_FULL: on COMMIT these mean it did
not happen. After any other error (SQLITE_IOERR above all) SQLite cannot say whether
the transaction reached the disk: its outcome is unknown."""


def _failed(db: sqlite3.Connection, error: Exception, *, unknown: bool) -> Answer:
    """The answer for a failed transaction, once it is rolled back. SQLite may have
    rolled it back itself (it does on a full disk) or left it open (it may after an
    error on COMMIT): ROLLBACK only what is still open, so that the answer carries the
    real error and the next BEGIN finds no transaction. If even that fails, the answer
    says the process ends: its connection is unusable, and the store starts another."""
    if db.in_transaction:
        with contextlib.suppress(Exception):  # in_transaction below says what it left
            db.execute("ROLLBACK")
    return [type(error).__name__, str(error), unknown, db.in_transaction]


def _error(message: str, name: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorname, error.sqlite_errorcode = name, code
    return error


def serve(path: str, synchronous: str, sock: socket.socket) -> None:
    # sqlite3 binds int, float and str directly but looks None up as an adaptable
    # object, failing two attribute lookups each time: about 0.65 µs per NULL, and a job's
    # insert and updates bind some twenty-five. A registered adapter is one dict hit and
    # a call; ``{}.get`` (None for None) is a call into C, not a Python frame: 0.17 µs a
    # NULL, against 0.22 with a Python function.
    sqlite3.register_adapter(type(None), {}.get)  # type: ignore[arg-type]  # overloaded get
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("PRAGMA busy_timeout = 30000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for {path} (got {mode})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        level = db.execute("PRAGMA synchronous").fetchone()[0]
    except Exception as exc:
        _send(sock, [type(exc).__name__, str(exc)])
        return
    _send(sock, {"journal_mode": mode.lower(), "synchronous": level})
    faults = os.environ.get(FAULTS)
    if faults:
        db = _Faulty(db, faults)  # type: ignore[assignment]  # the test seam
    while True:
        header = _receive(sock, _LENGTH.size)
        if header is None:
            break  # the store closed (or its process ended): nothing more will come
        body = _receive(sock, _LENGTH.unpack(header)[0])
        if body is None:
            break
        request = marshal.loads(body)
        answer = _probe(db) if request == PROBE else _transaction(db, request)
        try:
            _send(sock, answer)
        except OSError:
            break  # the store is gone: nobody to answer
        if answer is not None and answer[3]:
            break  # the transaction could not be rolled back: a new process takes over
    db.close()


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[4]))
    serve(sys.argv[1], sys.argv[2], socket.socket(fileno=int(sys.argv[3])))
