"""Opening a store that cannot be used: one error, `StoreOpenFailed`, whose one line names
the file and the cause; the file is left as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import emit
from emit.store.records import Changes, job_row
from emit.store.sqlite import SQLiteStore

from .test_stores import SPACE, make_job


async def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "emit.db"
    path.write_bytes(b"\x01" * 10_000)
    with pytest.raises(emit.StoreOpenFailed) as raised:
        await SQLiteStore(path).open()
    assert str(raised.value) == f"cannot open the store {path}: file is not a database"
    assert path.read_bytes() == b"\x01" * 10_000


async def test_a_truncated_database(tmp_path: Path) -> None:
    path = tmp_path / "emit.db"
    store = SQLiteStore(path)
    await store.open()
    await store.commit(
        [Changes(spaces=[SPACE], inserts=[job_row(make_job(n)) for n in range(500)])]
    )
    await store.close()
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(emit.StoreOpenFailed, match="malformed"):
        async with emit.open_runtime(tmp_path):
            pass  # pragma: no cover


async def test_a_data_directory_that_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "data" / "emit.db"
    with pytest.raises(emit.StoreOpenFailed, match=f"{path}: Not a directory"):
        await SQLiteStore(path).open()
