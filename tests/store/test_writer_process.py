"""The SQLite store's writer process: its settings, its death (killed alone: one commit
fails and the next starts a new process; its server killed: it dies too), and that an
error in one transaction leaves it working."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import emit
from emit.store.records import Changes, job_row
from emit.store.sqlite import SQLiteStore, WriterGone

from .test_stores import SPACE, make_job


async def _exited(pid: int) -> None:
    """Wait, without polling, until process ``pid`` (not ours to reap) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
async def test_the_writer_process_opens_the_store_as_configured(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    store = SQLiteStore(tmp_path / "emit.db", synchronous=synchronous)
    await store.open()
    try:
        assert store.writer_settings == {"journal_mode": "wal", "synchronous": level}
    finally:
        await store.close()


async def test_a_killed_writer_fails_one_commit_and_the_next_starts_a_new_one(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    try:
        await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])])
        process = store._process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(process.wait)
        with pytest.raises(WriterGone):
            await store.commit([Changes(inserts=[job_row(make_job(2))])])
        await store.commit([Changes(inserts=[job_row(make_job(3))])])
        assert store._process is not None and store._process.pid != process.pid
        found = [await store.get_job(make_job(n).id) for n in (1, 2, 3)]
        assert [job is not None for job in found] == [True, False, True]
    finally:
        await store.close()


async def test_an_error_in_one_transaction_leaves_the_writer_working(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    try:
        await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])])
        process = store._process
        with pytest.raises(sqlite3.IntegrityError):
            await store.commit([Changes(inserts=[job_row(make_job(1))])])
        await store.commit([Changes(inserts=[job_row(make_job(2))])])
        assert store._process is process
        assert await store.get_job(make_job(2).id) is not None
    finally:
        await store.close()


async def test_closing_the_store_ends_the_writer_process(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    process = store._process
    assert process is not None
    await store.close()
    assert process.returncode == 0


_SERVER = """
import marshal, sys, trio
from pathlib import Path
from emit.store.records import Changes, job_row
from emit.store.sqlite import SQLiteStore, _LENGTH, _steps
from tests.store.test_stores import SPACE, make_job

async def main():
    store = SQLiteStore(Path(sys.argv[1]))
    await store.open()
    body = marshal.dumps(_steps([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])]))
    await store._writer.send_all(_LENGTH.pack(len(body)) + body)  # a transaction in flight
    print(store._process.pid, flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
async def test_the_writer_process_dies_with_its_server_mid_transaction(tmp_path: Path) -> None:
    """The server is killed while its writer waits for a lock inside a transaction: the
    writer dies at once (not when its 30 s busy timeout ends), and the transaction never
    commits behind the back of the next server."""
    path = tmp_path / "emit.db"
    store = SQLiteStore(path)  # make the schema, then hold the write lock
    await store.open()
    await store.close()
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    server = await trio.lowlevel.open_process(
        [sys.executable, "-c", _SERVER, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(emit.__file__).parent.parent,
    )
    try:
        assert server.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await server.stdout.receive_some()
            assert chunk, "the server ended before it started its writer"
            line += chunk
        writer = int(line)
        server.kill()
        with trio.fail_after(10):
            await _exited(writer)
    finally:
        server.kill()
        await server.wait()
        lock.execute("ROLLBACK")
        lock.close()
    again = SQLiteStore(path)
    await again.open()
    try:
        assert await again.get_job(make_job(1).id) is None
    finally:
        await again.close()


_IDLE_THREADS = """
import sys, threading, trio
from pathlib import Path
from trio._core import _thread_cache
from emit.store.records import Changes
from emit.store.sqlite import SQLiteStore
from tests.store.test_stores import SPACE

_thread_cache.IDLE_TIMEOUT = 2.0  # worker threads end 2 s after their last job

async def main():
    store = SQLiteStore(Path(sys.argv[1]))
    await store.open()
    for worker in threading.enumerate():  # the ones opening used: let them end
        if worker is not threading.current_thread():
            worker.join()  # blocking, on purpose: no new worker thread while we wait
    await store.commit([Changes(spaces=[SPACE])])
    await store.close()
    print("ok")

trio.run(main)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
async def test_the_writer_outlives_the_servers_worker_threads(tmp_path: Path) -> None:
    """The writer dies with the thread that forked it (PR_SET_PDEATHSIG follows threads):
    that must be the event loop's, not a worker thread that ends when idle. Worker
    threads here end 2 s after their last job: well after the writer has set its death
    signal (before it says hello), so a writer forked by one would be killed."""
    done = await trio.run_process(
        [sys.executable, "-c", _IDLE_THREADS, str(tmp_path / "emit.db")],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=Path(emit.__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"ok\n"


async def test_the_writer_ignores_the_signals_a_terminal_sends_its_group(tmp_path: Path) -> None:
    """Ctrl+C (or systemctl stop) signals the server's whole process group: the server
    drains, and the writer must live on to save the drain's writes."""
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    try:
        process = store._process
        assert process is not None
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])])
        assert store._process is process and process.poll() is None
    finally:
        await store.close()


async def test_a_commit_after_close_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.commit([Changes(spaces=[SPACE])])
    assert store._process is None


async def test_close_ends_the_writer_even_when_cancelled(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    process = store._process
    assert process is not None
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.close()
    assert process.poll() is not None


class Interrupted(Exception):
    """Stands for anything that can strike between sending and reading an answer."""


async def test_an_error_between_send_and_answer_never_pairs_answers_wrongly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    try:
        await store.commit([Changes(spaces=[SPACE])])
        receive = store._receive

        async def interrupted(writer: object) -> bytes:
            monkeypatch.setattr(store, "_receive", receive)
            raise Interrupted

        monkeypatch.setattr(store, "_receive", interrupted)
        with pytest.raises(Interrupted):  # sent; its answer never read
            await store.commit([Changes(inserts=[job_row(make_job(1))])])
        # The next commits get their own answers: a clash is a clash, a good one is good.
        with pytest.raises(sqlite3.IntegrityError):
            await store.commit([Changes(inserts=[job_row(make_job(1))])])
        await store.commit([Changes(inserts=[job_row(make_job(2))])])
        assert await store.get_job(make_job(2).id) is not None
    finally:
        await store.close()


def test_a_server_killed_with_answers_unread_ends_the_writer_quietly(tmp_path: Path) -> None:
    """The server dies with the writer's answer unread in its socket: the writer's next
    read is a reset, not an end of stream. That is the end of the stream too: the
    writer exits cleanly, without a traceback in the log of a crash it did not cause."""
    import socket

    from emit.store import _writer_process

    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, _writer_process.__file__, str(tmp_path / "emit.db"), "FULL",
         str(theirs.fileno()), str(os.getpid())],
        pass_fds=[theirs.fileno()],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    theirs.close()
    # Its first message (how it opened the store) is sent but never read: wait until it
    # is in our socket, then close with it unread, as a killed server does.
    ours.settimeout(10)
    assert ours.recv(1, socket.MSG_PEEK)
    ours.close()
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stderr == b""
