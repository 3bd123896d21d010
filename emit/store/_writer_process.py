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
the transaction is committed, or ``[error class name, message]`` once it is rolled back.
When the parent closes its end, the process exits.

On Linux the process dies with its parent (``PR_SET_PDEATHSIG``): a transaction in
flight when the server is killed is then either committed or rolled back before any new
server opens the store, never committed behind the back of one that already loaded it.
Elsewhere it only sees the end of the stream, after the transaction in hand. It ignores
SIGINT and SIGTERM: the server stops it, by closing the stream, once it has drained.
"""

from __future__ import annotations

import marshal
import os
import signal
import socket
import sqlite3
import struct
import sys

_LENGTH = struct.Struct("<Q")


def _receive(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _send(sock: socket.socket, message: dict[str, object] | list[str] | None) -> None:
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
    while True:
        header = _receive(sock, _LENGTH.size)
        if header is None:
            break  # the store closed (or its process ended): nothing more will come
        body = _receive(sock, _LENGTH.unpack(header)[0])
        if body is None:
            break
        answer: list[str] | None = None
        try:
            steps = marshal.loads(body)
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in steps:
                    db.executemany(sql, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except Exception as exc:
            answer = [type(exc).__name__, str(exc)]
        try:
            _send(sock, answer)
        except OSError:
            break  # the store is gone: nobody to answer
    db.close()


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[4]))
    serve(sys.argv[1], sys.argv[2], socket.socket(fileno=int(sys.argv[3])))
