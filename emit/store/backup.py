"""A consistent copy of a store that a server may be writing: SQLite's online backup API,
read from one snapshot.

The copy reads through a connection of its own, as the server's readers do: in WAL mode a
reader never blocks the writer (nor the writer a reader), so the server's writer process
goes on committing while the copy runs, its new transactions appended to the log.

The copy holds one read transaction from its first page to its last. The backup API
copies in steps (``STEP_PAGES`` at a time); between two steps that each opened their
own read transaction, a commit by another connection (the server's writer) would make
SQLite restart the copy from the first page, so a stepped copy of a busy store might
never end. Inside one read transaction every step reads the same snapshot and the copy
always ends: it is the store as of the moment the copy began. While it runs, the writer
cannot checkpoint the log past that snapshot, so the log grows until the copy is done
(the writer's own checkpoints wait for no reader: docs/persistence.md).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

STEP_PAGES = 256
"""Pages the backup API copies a step (1 MiB at SQLite's 4 KiB default)."""


class NotAStore(Exception):
    """The file is an SQLite database, but not one emit made."""


def copy_database(
    source: Path,
    target: Path,
    *,
    pages: int = STEP_PAGES,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy the emit store at ``source`` to the new file ``target``, as of one moment,
    and check the copy (``PRAGMA integrity_check``); returns the pages copied.

    ``source`` is opened for reading only and never created; ``target`` must not exist.
    ``progress(remaining, total)`` is called after each step. Raises ``NotAStore`` for a
    database emit did not make, ``sqlite3.Error`` for one SQLite cannot read or a copy
    that fails its check (``target`` is then left for the caller to remove)."""
    if target.exists():
        raise FileExistsError(f"{target} exists")
    # mode=rw: never make a database where there was none. Nothing is written through
    # it (query_only); read-write only so that SQLite can use the log's shared memory
    # beside a running server, and replay the log of one that stopped.
    reader = sqlite3.connect(
        f"{source.absolute().as_uri()}?mode=rw", uri=True, isolation_level=None, timeout=30
    )
    try:
        reader.execute("PRAGMA query_only = 1")
        reader.execute("BEGIN")  # the snapshot begins with the first read, next line
        version = reader.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            name
            for (name,) in reader.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        }
        if version < 1 or not {"spaces", "tokens", "jobs"} <= tables:
            raise NotAStore(f"{source} is an SQLite database, but not an emit store")
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            reader.backup(copy, pages=pages, progress=_reporter(progress))
            copied = copy.execute("PRAGMA page_count").fetchone()[0]
            problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError(f"the copy fails its check: {problems[0]}")
        finally:
            copy.close()
        reader.execute("COMMIT")
    finally:
        reader.close()
    fsync_path(target)
    return int(copied)


def _reporter(
    progress: Callable[[int, int], None] | None,
) -> Callable[[int, int, int], object] | None:
    if progress is None:
        return None
    return lambda status, remaining, total: progress(remaining, total)


def fsync_path(path: Path) -> None:
    """Make a file, or a directory's entries, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
