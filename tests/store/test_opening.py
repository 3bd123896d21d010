"""Opening a store that cannot be used: one error, `StoreOpenFailed`, whose one line names
the file (or the database, without its password) and the cause; the file is left as it
was. PostgreSQL's tests run in real time: that store works in threads."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import trio

import emit
from emit.store.postgres import PostgresStore
from emit.store.postgres_schema import MIGRATIONS
from emit.store.records import Changes, job_row
from emit.store.sqlite import SQLiteStore

from ..postgres import free_port
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


async def _refusal(url: str) -> str:
    """The one line `PostgresStore.open` refuses ``url`` with."""
    with trio.fail_after(30), pytest.raises(emit.StoreOpenFailed) as raised:
        await PostgresStore(url).open()
    message = str(raised.value)
    assert "\n" not in message
    return message


async def test_no_database_server_there() -> None:
    port = free_port()
    message = await _refusal(f"postgresql://emit:sekrit@127.0.0.1:{port}/emit")
    assert message.startswith(f"cannot open the store postgresql://emit@127.0.0.1:{port}/emit: ")
    assert "refused" in message and "sekrit" not in message


async def test_a_role_the_server_refuses(database_url: str) -> None:
    url = database_url.replace("//emit@", "//intruder:sekrit@")
    message = await _refusal(url)
    assert message.startswith(f"cannot open the store {url.replace(':sekrit', '')}: ")
    assert 'role "intruder" does not exist' in message and "sekrit" not in message


async def test_a_database_that_does_not_exist(database_url: str) -> None:
    message = await _refusal(database_url + "_missing")
    assert f'database "{database_url.rpartition("/")[2]}_missing" does not exist' in message


async def test_a_url_that_does_not_parse() -> None:
    message = await _refusal("postgresql://emit:sekrit@127.0.0.1:port/emit")
    assert message.startswith("cannot open the store postgresql://emit@127.0.0.1:port/emit: ")
    assert "port" in message.partition(": ")[2] and "sekrit" not in message


def test_the_password_is_never_shown() -> None:
    for url in (
        "postgresql://emit:sekrit@db.example:5432/emit?sslmode=require&password=sekrit",
        "host=db.example password=sekrit dbname=emit",
        "host=db.example password='sek rit' dbname=emit",
    ):
        store = PostgresStore(url)
        assert "sekrit" not in repr(store) and "sek" not in store.describe()
        assert "db.example" in store.describe()


async def test_a_newer_postgresql_schema_is_refused_and_migrations_run_once(
    database_url: str,
) -> None:
    with trio.fail_after(30):
        for n in (1, 2):  # the second open finds the schema made, and the data kept
            store = PostgresStore(database_url)
            await store.open()
            await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(n))])])
            assert [await store.get_job(make_job(m).id) is not None for m in (1, 2)] == [
                True,
                n == 2,
            ]
            await store.close()
        with psycopg.connect(database_url, autocommit=True) as db:
            assert db.execute("SELECT version FROM schema_version").fetchall() == [
                (len(MIGRATIONS),)
            ]
            db.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS) + 1,))
        message = await _refusal(database_url)
    assert message.endswith(
        f"the database has schema version {len(MIGRATIONS) + 1}, newer than this emit "
        f"knows ({len(MIGRATIONS)}): upgrade emit"
    )


async def test_nodes_opening_one_new_database_at_once_migrate_it_once(database_url: str) -> None:
    stores = [PostgresStore(database_url) for _ in range(4)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(store.open)
        await stores[0].commit([Changes(spaces=[SPACE])])
        assert [await store.get_space(SPACE.id) for store in stores] == [SPACE] * 4
        for store in stores:
            await store.close()
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
