"""`copy_database`: a stepped online backup of a store that another connection keeps
writing ends, and holds the store as of the moment it began."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from emit.store.backup import NotAStore, copy_database
from emit.store.records import Changes, job_row
from emit.store.schema import migrate
from emit.store.sqlite import SQLiteStore

from .test_stores import SPACE, make_job


async def make_store(path: Path, jobs: int) -> None:
    store = SQLiteStore(path)
    await store.open()
    await store.commit(
        [Changes(spaces=[SPACE], inserts=[job_row(make_job(n)) for n in range(jobs)])]
    )
    await store.close()


def add_logs(writer: sqlite3.Connection, job: str, numbers: range) -> None:
    """Log lines for ``job``, in one transaction of another connection than the copy's."""
    writer.execute("BEGIN")
    writer.executemany(
        "INSERT INTO job_logs VALUES (?, ?, 20, 'a line', 0, NULL)",
        [(job, n) for n in numbers],
    )
    writer.execute("COMMIT")


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_a_copy_in_steps_ends_while_every_step_is_followed_by_a_commit(
    tmp_path: Path,
) -> None:
    await make_store(tmp_path / "emit.db", 2000)
    job = make_job(0).id
    writer = sqlite3.connect(tmp_path / "emit.db", isolation_level=None)
    add_logs(writer, job, range(1000))
    steps: list[int] = []

    def commit_between_steps(remaining: int, total: int) -> None:
        # Without one snapshot for the whole copy, each of these commits would send the
        # copy back to its first page: it would never end.
        steps.append(remaining)
        assert len(steps) < 1000, "the copy keeps restarting"
        add_logs(writer, job, range(1000 * len(steps), 1000 * len(steps) + 1000))

    pages = copy_database(
        tmp_path / "emit.db", tmp_path / "copy.db", pages=8, progress=commit_between_steps
    )
    writer.close()

    assert len(steps) == -(-pages // 8) > 10  # copied in many steps, none repeated
    assert steps == sorted(steps, reverse=True) and steps[-1] == 0
    assert count(tmp_path / "copy.db", "jobs") == 2000
    assert count(tmp_path / "copy.db", "job_logs") == 1000  # as of the copy's first step
    assert count(tmp_path / "emit.db", "job_logs") == 1000 * (len(steps) + 1)


async def test_the_copy_is_a_store_the_server_opens_as_it_is(tmp_path: Path) -> None:
    await make_store(tmp_path / "emit.db", 10)
    copy_database(tmp_path / "emit.db", tmp_path / "copy.db")
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA user_version").fetchone()[0] == migrate(copy)


def test_a_database_emit_did_not_make_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.db") as other:
        other.execute("CREATE TABLE spaces (id)")
    with pytest.raises(NotAStore, match="not an emit store"):
        copy_database(tmp_path / "other.db", tmp_path / "copy.db")


def test_a_missing_source_is_not_made(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        copy_database(tmp_path / "emit.db", tmp_path / "copy.db")
    assert not (tmp_path / "emit.db").exists()
