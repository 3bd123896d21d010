"""A PostgreSQL transaction that fails, against a real server: an error before COMMIT
rolls it all back and is raised as it is; the connection lost during COMMIT is an
unknown outcome; either way the next commit works, on a new connection where the old
one is gone. The server is made to fail from the side: a trigger that waits on a lock
the test holds (so the writer is caught where the test wants it), and
``pg_terminate_backend``. Real time: the store works in threads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import trio

from emit.store.base import OutcomeUnknown
from emit.store.postgres import PostgresStore
from emit.store.records import Changes, job_row

from .test_stores import SPACE, make_job

LOCK = 4242


@pytest.fixture
def admin(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The test's own connection to the store's database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(database_url)
    with trio.fail_after(30):
        await store.open()
        await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])])
    try:
        yield store
    finally:
        with trio.fail_after(30):
            await store.close()


def _hold_jobs_at(admin: psycopg.Connection[tuple[object, ...]], moment: str) -> None:
    """Make a job insert wait, ``at insert`` or ``at commit``, until the test lets go of
    ``LOCK`` (which it now holds)."""
    deferred = "DEFERRABLE INITIALLY DEFERRED" if moment == "at commit" else ""
    admin.execute(
        "CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_advisory_xact_lock({LOCK}); RETURN NULL; END $$"
    )
    admin.execute(
        f"CREATE CONSTRAINT TRIGGER wait_for_test AFTER INSERT ON jobs {deferred} "
        "FOR EACH ROW EXECUTE FUNCTION wait_for_test()"
    )
    admin.execute(f"SELECT pg_advisory_lock({LOCK})")


def _let_go(admin: psycopg.Connection[tuple[object, ...]]) -> None:
    admin.execute(f"SELECT pg_advisory_unlock({LOCK})")
    admin.execute("DROP TRIGGER wait_for_test ON jobs")  # once a writer waiting is done


async def _writer_waits(
    admin: psycopg.Connection[tuple[object, ...]], store: PostgresStore, query: str
) -> int:
    """Once the store's writer waits for the lock while running ``query``: its pid."""
    assert store._writer is not None
    pid = store._writer.info.backend_pid
    waiting = "SELECT FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock' "
    waiting += "AND query LIKE %s"
    for _ in range(10_000):  # a condition on the server: nothing to wait on but it
        if admin.execute(waiting, (pid, f"{query}%")).fetchall():
            return pid
        await trio.sleep(0.005)
    raise AssertionError(f"the writer never waited in {query}")


async def _present(store: PostgresStore, *numbers: int) -> list[bool]:
    return [await store.get_job(make_job(n).id) is not None for n in numbers]


async def test_an_error_before_commit_rolls_back_every_batch(store: PostgresStore) -> None:
    writer = store._writer
    with trio.fail_after(30):
        clash = Changes(inserts=[job_row(make_job(1))])  # job 1 is there already
        with pytest.raises(psycopg.errors.UniqueViolation) as raised:
            await store.commit([Changes(inserts=[job_row(make_job(2))]), clash])
        assert not isinstance(raised.value, OutcomeUnknown)
        assert store.failure is not None and "jobs_pkey" in store.failure
        await store.check_writable()  # a real write, which succeeds
        assert store.failure is None
        await store.commit([Changes(inserts=[job_row(make_job(3))])])
        assert await _present(store, 1, 2, 3) == [True, False, True]
    assert store._writer is writer  # rolled back: the same connection goes on


async def test_an_error_the_server_answers_to_commit_is_no_unknown(
    store: PostgresStore, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    admin.execute(
        "ALTER TABLE jobs ADD CONSTRAINT one_name UNIQUE (space_id, name) "
        "DEFERRABLE INITIALLY DEFERRED"
    )
    with trio.fail_after(30):
        clash = [job_row(make_job(n)) for n in (3, 5)]  # same name as job 1 at COMMIT
        with pytest.raises(psycopg.errors.UniqueViolation) as raised:
            await store.commit([Changes(inserts=clash)])
        assert not isinstance(raised.value, OutcomeUnknown)
        await store.commit([Changes(inserts=[job_row(make_job(2))])])
        assert await _present(store, 1, 2, 3, 5) == [True, True, False, False]


async def test_a_connection_lost_before_commit_saves_nothing(
    store: PostgresStore, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    _hold_jobs_at(admin, "at insert")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def commit() -> None:
                try:
                    await store.commit([Changes(inserts=[job_row(make_job(2))])])
                except psycopg.OperationalError as error:
                    failed.append(error)

            nursery.start_soon(commit)
            pid = await _writer_waits(admin, store, "INSERT")
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _let_go(admin)
        assert len(failed) == 1 and not isinstance(failed[0], OutcomeUnknown)
        await store.commit([Changes(inserts=[job_row(make_job(3))])])
        assert await _present(store, 1, 2, 3) == [True, False, True]


async def test_a_connection_lost_during_commit_is_outcome_unknown(
    store: PostgresStore, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    _hold_jobs_at(admin, "at commit")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            failed: list[BaseException] = []

            async def commit() -> None:
                try:
                    await store.commit([Changes(inserts=[job_row(make_job(2))])])
                except OutcomeUnknown as error:
                    failed.append(error)

            nursery.start_soon(commit)
            pid = await _writer_waits(admin, store, "COMMIT")
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _let_go(admin)
        assert len(failed) == 1 and "may or may not have been saved" in str(failed[0])
        await store.commit([Changes(inserts=[job_row(make_job(3))])])  # connects again
        assert await _present(store, 1, 3) == [True, True]


async def test_a_commit_whose_caller_is_cancelled_runs_to_its_end(
    store: PostgresStore, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    _hold_jobs_at(admin, "at insert")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            caller = trio.CancelScope()

            async def commit() -> None:
                with caller:
                    await store.commit([Changes(inserts=[job_row(make_job(2))])])

            nursery.start_soon(commit)
            await _writer_waits(admin, store, "INSERT")
            caller.cancel()
            await trio.testing.wait_all_tasks_blocked()
            _let_go(admin)
        assert await _present(store, 2) == [True]


async def test_connections_the_server_closed_meanwhile_are_replaced(
    store: PostgresStore, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    """As after a restart of the server: the next commit and reads just work."""
    writer = store._writer
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'emit' AND pid <> pg_backend_pid()"
    )
    with trio.fail_after(30):
        assert await _present(store, 1) == [True]
        await store.commit([Changes(inserts=[job_row(make_job(2))])])
        assert await _present(store, 1, 2) == [True, True]
    assert store._writer is not writer and store.failure is None
