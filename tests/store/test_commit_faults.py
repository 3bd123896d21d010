"""A transaction that fails in the writer process, through its test seam (the real SQLite
underneath, the failure made up the way SQLite fails; `_writer_process._Faulty`): the
caller gets SQLite's own error, an I/O error on COMMIT is reported as outcome unknown,
the failed transaction is never left open, and the next commit works once the fault
clears, in the same process where it can be."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from emit.store.base import OutcomeUnknown
from emit.store.records import Changes, job_row
from emit.store.sqlite import SQLiteStore

from ..writer_faults import Faults
from .test_stores import SPACE, make_job


@pytest.fixture
def faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults.install(tmp_path, monkeypatch)


@pytest.fixture
async def store(tmp_path: Path, faults: Faults) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])])
    try:
        yield store
    finally:
        faults.clear()
        await store.close()


async def _present(store: SQLiteStore, *numbers: int) -> list[bool]:
    return [await store.get_job(make_job(n).id) is not None for n in numbers]


async def test_a_full_disk_mid_transaction_reports_sqlites_own_error(
    store: SQLiteStore, faults: Faults
) -> None:
    faults.set("write")
    with trio.fail_after(10):
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full") as raised:
            await store.commit([Changes(inserts=[job_row(make_job(2))])])
        assert not isinstance(raised.value, OutcomeUnknown)  # rolled back: nothing was saved
        faults.clear()
        await store.commit([Changes(inserts=[job_row(make_job(3))])])
    assert await _present(store, 1, 2, 3) == [True, False, True]


async def test_an_io_error_on_commit_is_outcome_unknown_and_never_left_open(
    store: SQLiteStore, faults: Faults
) -> None:
    process = store._process
    faults.set("commit")
    with trio.fail_after(10):
        with pytest.raises(OutcomeUnknown, match="disk I/O error"):
            await store.commit([Changes(inserts=[job_row(make_job(2))])])
        with pytest.raises(OutcomeUnknown):  # each try fails alike while the fault lasts
            await store.commit([Changes(inserts=[job_row(make_job(3))])])
        faults.clear()
        await store.commit([Changes(inserts=[job_row(make_job(4))])])
    assert await _present(store, 1, 2, 3, 4) == [True, False, False, True]
    assert store._process is process  # rolled back: the same connection goes on


async def test_a_writer_that_dies_mid_transaction_is_outcome_unknown(
    store: SQLiteStore, faults: Faults
) -> None:
    faults.set("die")
    with trio.fail_after(10):
        with pytest.raises(OutcomeUnknown):
            await store.commit([Changes(inserts=[job_row(make_job(2))])])
        with pytest.raises(OutcomeUnknown):  # the next process dies alike
            await store.commit([Changes(inserts=[job_row(make_job(3))])])
        faults.clear()
        await store.commit([Changes(inserts=[job_row(make_job(4))])])
    assert await _present(store, 1, 2, 3, 4) == [True, False, False, True]


async def test_a_transaction_that_cannot_be_rolled_back_ends_its_process(
    store: SQLiteStore, faults: Faults
) -> None:
    process = store._process
    assert process is not None
    faults.set("stuck")
    with trio.fail_after(10):
        with pytest.raises(OutcomeUnknown, match="disk I/O error"):
            await store.commit([Changes(inserts=[job_row(make_job(2))])])
        assert process.returncode == 0  # it said so, ended, and was waited for
        faults.clear()
        await store.commit([Changes(inserts=[job_row(make_job(3))])])
    assert store._process is not process
    assert await _present(store, 1, 2, 3) == [True, False, True]
