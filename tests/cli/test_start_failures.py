"""``emit serve`` on a data directory it cannot use: a truncated or garbage database, a
read-only directory, an empty database where data was before. Each is one line on
stderr naming the file and the cause, exit status 2, and nothing made or changed."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_cli import EMIT, Served, run


def serve(data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("EMIT_ADMIN_KEY", None)
    return subprocess.run(
        [*EMIT, "serve", "--data", str(data), "--port", "0"],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip


def assert_refused(done: subprocess.CompletedProcess[str], *mentions: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("emit: "), done.stderr
    for mention in mentions:
        assert mention in lines[0]


def used(data: Path) -> None:
    """A data directory with a store of some pages: a space made by `emit spaces
    create`, and more written beside it."""
    run("spaces", "create", "main", data=data)
    with contextlib.closing(sqlite3.connect(data / "emit.db")) as db, db:
        db.executemany(
            "INSERT INTO spaces VALUES (?, ?, ?, 0, '{}')",
            [(f"space-{n}", "x" * 500, "emit_pub_x") for n in range(200)],
        )


def test_a_truncated_database_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    used(data)
    db = data / "emit.db"
    os.truncate(db, db.stat().st_size // 2)
    before = db.read_bytes()
    assert_refused(serve(data), str(db), "malformed")
    assert db.read_bytes() == before and not (data / "admin.key").exists()


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "emit.db").write_bytes(b"not a database, whatever it is " * 1000)
    assert_refused(serve(data), str(data / "emit.db"), "not a database")
    assert not (data / "admin.key").exists()


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_read_only_data_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as mnt:
        data = mnt / "data"
        used(data)
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True
        )
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remounted.stderr.strip()}")
        assert_refused(serve(data), str(data / "emit.db"))
        assert_refused(serve(mnt / "new"), str(mnt / "new"))  # cannot even make it


@pytest.mark.parametrize("loss", ["emptied", "deleted"])
def test_a_used_data_directory_with_no_database_refuses_to_start_over(
    tmp_path: Path, loss: str
) -> None:
    data = tmp_path / "data"
    first = Served(data)
    assert first.stop()[0] == 0
    key = (data / "admin.key").read_text()
    db = data / "emit.db"
    if loss == "emptied":
        os.truncate(db, 0)
    else:
        db.unlink()
    assert_refused(serve(data), str(db), "admin.key")
    assert (data / "admin.key").read_text() == key  # nothing changed: no new store
    assert (db.stat().st_size == 0) if loss == "emptied" else not db.exists()
    listed = subprocess.run(
        [*EMIT, "spaces", "list", "--data", str(data)], capture_output=True, text=True, timeout=30
    )
    assert_refused(listed, str(db))
