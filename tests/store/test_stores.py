"""The store contract, against a real SQLite file, a PostgreSQL database and the
in-memory store: each must read back exactly what was committed. Real time (no
autojump): SQLite and PostgreSQL work runs in threads, and the autojump clock would jump
while a thread works."""

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from emit.domain import lifecycle
from emit.domain.job import Job
from emit.domain.model import Event, EventType, JobStatus, LogLevel, RetryBackoff
from emit.domain.records import Callback, LogLine, Space, Token
from emit.ids import new_id
from emit.store.base import Expired, Store, StoreOpenFailed
from emit.store.memory import MemoryStore
from emit.store.postgres import PostgresStore
from emit.store.records import (
    INLINE_ENTRY,
    INLINE_EVENTS,
    JOB_COLUMNS,
    Changes,
    EventRow,
    event_record,
    event_row,
    job_row,
    log_row,
    state_row,
)
from emit.store.schema import MIGRATIONS
from emit.store.sqlite import SQLiteStore

SPACE = Space("01SPACE0000000000000000000", "s", "emit_pub_x", 1000.0, {"a": 1})


def make_job(n: int, status: JobStatus = JobStatus.PENDING, **fields: object) -> Job:
    values: dict[str, object] = {
        "id": f"01JOB{n:021d}",
        "space_id": SPACE.id,
        "seq": n,
        "name": "email" if n % 2 else "sms",
        "payload": f'{{"n":{n}}}',
        "status": status,
        "priority": 0,
        "max_retries": 3,
        "timeout_seconds": 300,
        "created_at": 1000.0 + n,
        "updated_at": 1000.0 + n,
    }
    values.update(fields)
    return Job(**values)  # type: ignore[arg-type]


async def events_of(store: Store, job_id: str) -> list[Event]:
    found = await store.get_job_with_events(job_id)
    assert found is not None
    return found[1]


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store
    if request.param == "sqlite":
        made = SQLiteStore(tmp_path / "emit.db")
    elif request.param == "postgresql":
        made = PostgresStore(request.getfixturevalue("database_url"))
    else:
        made = MemoryStore()
    with trio.fail_after(30):
        await made.open()
        await made.commit([Changes(spaces=[SPACE])])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_bound_the_test, 60)
        yield made
        nursery.cancel_scope.cancel()
    with trio.fail_after(30):
        await made.close()


async def _bound_the_test(seconds: float) -> None:
    """Fail the test using the store if it takes longer (pytest-trio cancels a test
    whose fixture raises)."""
    with trio.fail_after(seconds):
        await trio.sleep_forever()


def rows_of(store: Store, query: str) -> list[tuple[Any, ...]]:
    """What ``query`` reads straight from the store's database (SQL both speak)."""
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            return db.execute(query).fetchall()
    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.url) as connection:
        return connection.execute(query.encode()).fetchall()


async def test_a_job_reads_back_exactly(store: Store) -> None:
    job = make_job(
        1,
        callback_url="https://example.com/hook",
        callback_headers={"X-A": "b"},
        idempotency_key="k1",
        retry_backoff=RetryBackoff(1, 2, 30),
        scheduled_for=2000.5,
    )
    await store.commit([Changes(inserts=[job_row(job)])])
    got = await store.get_job(job.id)
    assert got is not None
    assert job_row(got) == job_row(job)


async def test_state_updates_touch_the_state_not_the_payload(store: Store) -> None:
    job = make_job(1)
    await store.commit([Changes(inserts=[job_row(job)])])
    events = lifecycle.deliver(job, 1001.0, "LEASE")
    events += lifecycle.ack(job, 1002.0, "LEASE")
    job.progress = {"percent": 5, "message": "m", "subProgress": None}
    changes = Changes(updates=[state_row(job)], events=[event_row(job.id, e) for e in events])
    await store.commit([changes])
    got = await store.get_job(job.id)
    assert got is not None and job_row(got) == job_row(job)
    assert got.status is JobStatus.RUNNING and got.lease_id == "LEASE"
    assert [e.type for e in await events_of(store, job.id)] == [
        EventType.DELIVERED,
        EventType.STARTED,
    ]


async def test_events_and_logs_read_back_in_order_with_filters(store: Store) -> None:
    job = make_job(1)
    events = [Event(i, EventType.PROGRESS, 0, {"percent": i}, 1000.0 + i) for i in (1, 2)]
    lines = [
        LogLine(1, LogLevel.DEBUG, "connect", 1.0, None),
        LogLine(2, LogLevel.WARN, "slow mail server", 2.0, {"ms": 900}),
        LogLine(3, LogLevel.ERROR, "bounce", 3.0, None),
    ]
    await store.commit(
        [
            Changes(
                inserts=[job_row(job)],
                events=[event_row(job.id, e) for e in events],
                logs=[log_row(job.id, line) for line in lines],
            )
        ]
    )
    assert await events_of(store, job.id) == events
    assert await store.get_logs(job.id, after=0, limit=10, level=None, q=None) == lines
    assert await store.get_logs(job.id, after=1, limit=1, level=None, q=None) == lines[1:2]
    got = await store.get_logs(job.id, after=0, limit=10, level=LogLevel.WARN, q=None)
    assert got == lines[1:]
    assert await store.get_logs(job.id, after=0, limit=10, level=None, q="mail") == lines[1:2]


async def test_list_is_newest_first_filtered_paged_and_counted(store: Store) -> None:
    jobs = [make_job(n) for n in range(1, 8)]
    jobs[0].status = JobStatus.COMPLETED
    await store.commit([Changes(inserts=[job_row(job) for job in jobs])])
    page, total = await store.list_jobs(SPACE.id, status=None, name=None, limit=3, offset=0)
    assert total == 7 and [j.seq for j in page] == [7, 6, 5]
    page, total = await store.list_jobs(SPACE.id, status=None, name="email", limit=9, offset=1)
    assert total == 4 and [j.seq for j in page] == [5, 3, 1]
    page, total = await store.list_jobs(
        SPACE.id, status=JobStatus.COMPLETED, name=None, limit=9, offset=0
    )
    assert total == 1 and page[0].seq == 1


async def test_load_space_brings_back_live_jobs_counts_and_keys(store: Store) -> None:
    jobs = [make_job(n, idempotency_key=f"k{n}") for n in range(1, 6)]
    jobs[1].status = JobStatus.DEAD
    jobs[3].status = JobStatus.RUNNING
    await store.commit([Changes(inserts=[job_row(job) for job in jobs])])
    state = await store.load_space(SPACE.id)
    assert state is not None
    assert sorted(job.seq for job in state.live_jobs) == [1, 3, 4, 5]
    assert state.counts[JobStatus.PENDING] == 3 and state.counts[JobStatus.DEAD] == 1
    assert state.max_seq == 5
    assert state.idempotency == {f"k{n}": jobs[n - 1].id for n in range(1, 6)}
    assert state.space == SPACE
    assert await store.load_space("01NOSUCHSPACE0000000000000") is None


async def test_tokens_and_spaces_round_trip_and_delete_together(store: Store) -> None:
    token = Token("01TOKEN0000000000000000000", SPACE.id, "w", "emit_abcdef", "h" * 64,
                  frozenset({"jobs:poll", "jobs:ack"}), 5.0)  # fmt: skip
    await store.commit([Changes(tokens=[token], inserts=[job_row(make_job(1))])])
    assert await store.token_by_hash("h" * 64) == token
    await store.commit([Changes(revoked_tokens=[(token.id, 9.0)])])
    revoked = await store.token_by_hash("h" * 64)
    assert revoked is not None and revoked.revoked_at == 9.0
    assert await store.list_spaces() == [SPACE]
    await store.commit([Changes(deleted_spaces=[SPACE.id])])
    assert await store.list_spaces() == []
    assert await store.list_tokens(SPACE.id) == []
    assert await store.get_job(make_job(1).id) is None


async def test_one_commit_is_one_transaction(store: Store, tmp_path: Path) -> None:
    first = Changes(inserts=[job_row(make_job(1))])
    clash = Changes(inserts=[job_row(make_job(1))])  # the same primary key again
    if isinstance(store, MemoryStore):
        store.fail_next = sqlite3.IntegrityError("as SQLite would")
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        await store.commit([first, clash])
    assert await store.get_job(make_job(1).id) is None  # the first batch rolled back too


async def test_sqlite_runs_in_wal_mode_with_synchronous_full(tmp_path: Path) -> None:
    """SQLite only: its journal and sync settings (PostgreSQL's are the server's)."""
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "emit.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.synchronous == "FULL"
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="OFF")


async def test_migrations_run_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """SQLite only, by its ``user_version``; PostgreSQL's ``schema_version``: in
    test_opening.py."""
    path = tmp_path / "emit.db"
    for _ in range(2):
        store = SQLiteStore(path)
        await store.open()
        await store.commit([Changes(spaces=[SPACE])])
        await store.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreOpenFailed, match="newer than this emit knows"):
        await SQLiteStore(path).open()


async def test_committed_data_survives_reopening(tmp_path: Path) -> None:
    """SQLite only (a file reopened); PostgreSQL's reopening: in test_opening.py."""
    path = tmp_path / "emit.db"
    store = SQLiteStore(path)
    await store.open()
    await store.commit([Changes(spaces=[SPACE], inserts=[job_row(make_job(1))])])
    await store.close()
    again = SQLiteStore(path)
    await again.open()
    got = await again.get_job(make_job(1).id)
    await again.close()
    assert got is not None and job_row(got) == job_row(make_job(1))


async def test_event_times_and_data_read_back_bit_exact(store: Store) -> None:
    job = make_job(1)
    times = [1795861396.438682, 0.1 + 0.2, 1e-7, 1764322476.9999998]
    events = [
        Event(i + 1, EventType.EVENT, 1, {"x": [1.5, "é", None, 2**40]}, at)
        for i, at in enumerate(times)
    ]
    await store.commit(
        [Changes(inserts=[job_row(job)], events=[event_row(job.id, e) for e in events])]
    )
    assert await events_of(store, job.id) == events


async def test_events_in_the_job_row_and_in_rows_of_their_own_read_back_in_order(
    store: Store, tmp_path: Path
) -> None:
    job = make_job(1)
    data: list[Any] = [None, {"percent": 5}, 'a "quoted" \\ line\n', [1, 2.5], 7, True]
    events = [
        Event(seq, EventType.PROGRESS, seq // 10, data[seq % len(data)], 1000.0 + seq / 7)
        for seq in range(1, INLINE_EVENTS + 12)
    ]
    long: dict[str, Any] = {"message": "x" * INLINE_ENTRY}  # too long for the job's row
    events[2] = Event(3, EventType.PROGRESS, 0, long, 1000.5)

    def split(chunk: list[Event]) -> tuple[str, list[EventRow]]:  # as the space actor does
        records = [event_record(job.id, e) for e in chunk]
        rows = [r for r in records if not isinstance(r, str)]
        return "".join(r for r in records if isinstance(r, str)), rows

    text, rows = split(events[:1])
    await store.commit([Changes(inserts=[job_row(job, text)], events=rows)])
    for start in range(1, len(events), 7):  # one commit crosses INLINE_EVENTS
        text, rows = split(events[start : start + 7])
        await store.commit([Changes(updates=[state_row(job, text)], events=rows)])
    assert await events_of(store, job.id) == events
    if not isinstance(store, MemoryStore):
        seqs = [seq for (seq,) in rows_of(store, "SELECT seq FROM job_events ORDER BY seq")]
        [(inline,)] = rows_of(store, "SELECT events FROM jobs")
        assert inline.count('"progress"') == INLINE_EVENTS - 1 > 0
        assert seqs == [3, *range(INLINE_EVENTS + 1, INLINE_EVENTS + 12)]


async def test_events_written_before_schema_3_read_back_with_later_ones(tmp_path: Path) -> None:
    """SQLite only: a database from before schema 3, which PostgreSQL never had (its
    first schema holds the events column)."""
    path = tmp_path / "emit.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:  # a store as emit left it before events moved into rows
        db.executescript(script)
    db.execute("PRAGMA user_version = 2")
    job = make_job(1)
    columns = ", ".join(JOB_COLUMNS)  # schema 2 has no events column
    db.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * 27)})", job_row(job)[:-1])
    old = lifecycle.created(job, 1001.0)
    db.executemany(
        "INSERT INTO job_events VALUES (?, ?, ?, ?, ?, ?)", [event_row(job.id, e) for e in old]
    )
    db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        new = lifecycle.deliver(job, 1002.0, "LEASE") + lifecycle.ack(job, 1003.0, "LEASE")
        text = "".join(r for r in (event_record(job.id, e) for e in new) if isinstance(r, str))
        assert text.count("[") == len(new)  # they go in the job's row now
        await store.commit([Changes(updates=[state_row(job, text)])])
        assert await events_of(store, job.id) == old + new
        got = await store.get_job(job.id)
        assert got is not None and got.status is JobStatus.RUNNING
    finally:
        await store.close()


async def test_live_key_hashes_leaves_out_unknown_and_revoked_keys(store: Store) -> None:
    live = Token("01TOKA", SPACE.id, "a", "emit_a", "hash-a", frozenset(), 1.0, None, False)
    revoked = Token("01TOKB", SPACE.id, "b", "emit_b", "hash-b", frozenset(), 1.0, 2.0, False)
    await store.commit([Changes(tokens=[live, revoked])])
    asked = {"hash-a", "hash-b", "hash-unknown"}
    assert await store.live_key_hashes(asked) == {"hash-a"}
    assert await store.live_key_hashes(set()) == set()


async def test_expired_jobs_are_the_finished_ones_past_their_cutoff_oldest_first(
    store: Store,
) -> None:
    def job(n: int, status: JobStatus, ended: float | None, key: str | None = None) -> Job:
        return make_job(
            n,
            status,
            id=new_id(1_000_000.0 + n),
            created_at=1_000_000.0 + n,
            completed_at=ended,
            idempotency_key=key,
        )

    old = [job(n, JobStatus.COMPLETED, 1_000_100.0 + n, f"k{n}") for n in range(1, 4)]
    recent = job(4, JobStatus.COMPLETED, 1_000_500.0)
    dead = job(5, JobStatus.DEAD, 1_000_105.0)
    running = job(6, JobStatus.RUNNING, None)
    delivering = job(7, JobStatus.COMPLETED, 1_000_107.0)
    hook = Callback("01CB", delivering.id, SPACE.id, "https://h", None, "{}", 1, 0.0, "pending", 0)
    await store.commit(
        [
            Changes(
                inserts=[job_row(j) for j in (*old, recent, dead, running, delivering)],
                callbacks=[hook],
            )
        ]
    )
    before = {JobStatus.COMPLETED: 1_000_200.0, JobStatus.DEAD: 1_000_200.0}
    found = await store.expired_jobs(SPACE.id, before, 10)
    assert found == [
        *[Expired(j.id, JobStatus.COMPLETED, j.idempotency_key) for j in old],
        Expired(dead.id, JobStatus.DEAD, None),
    ]
    assert await store.expired_jobs(SPACE.id, before, 2) == found[:2]
    assert await store.expired_jobs(SPACE.id, {JobStatus.DEAD: 1_000_200.0}, 10) == found[3:]
    assert await store.expired_jobs("01OTHER", before, 10) == []


async def test_a_deleted_job_goes_with_its_events_logs_and_callbacks(store: Store) -> None:
    kept, swept = make_job(1, JobStatus.COMPLETED), make_job(2, JobStatus.COMPLETED)
    changes = Changes(inserts=[job_row(kept), job_row(swept)])
    for job in (kept, swept):
        changes.events.append(event_row(job.id, Event(40, EventType.PROGRESS, 0, None, 1.0)))
        changes.logs.append(log_row(job.id, LogLine(1, LogLevel.INFO, "hi", 1.0, None)))
        changes.callbacks.append(
            Callback(
                f"CB{job.id}", job.id, SPACE.id, "https://h", None, "{}", 1, 0.0, "delivered", 0
            )
        )
    await store.commit([changes])
    await store.commit([Changes(deleted_jobs=[swept.id], reclaim_pages=10)])
    assert await store.get_job(swept.id) is None
    assert await store.get_job_with_events(swept.id) is None
    assert await store.get_logs(swept.id, after=0, limit=10, level=None, q=None) == []
    assert await store.get_callback(f"CB{swept.id}") is None
    assert len(await events_of(store, kept.id)) == 1
    assert len(await store.get_logs(kept.id, after=0, limit=10, level=None, q=None)) == 1
    assert await store.get_callback(f"CB{kept.id}") is not None
    if not isinstance(store, MemoryStore):
        assert rows_of(store, "SELECT count(*) FROM job_events") == [(1,)]


async def test_a_new_database_gives_freed_pages_back(tmp_path: Path) -> None:
    """SQLite only: its incremental vacuum (`Changes.reclaim_pages`); PostgreSQL's
    autovacuum does this on its own."""
    store = SQLiteStore(tmp_path / "emit.db")
    await store.open()
    await store.commit([Changes(spaces=[SPACE])])
    jobs = [make_job(n, JobStatus.COMPLETED, payload=f'"{"x" * 3000}"') for n in range(200)]
    await store.commit([Changes(inserts=[job_row(job) for job in jobs])])
    db = sqlite3.connect(tmp_path / "emit.db")
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    await store.commit([Changes(deleted_jobs=[job.id for job in jobs], reclaim_pages=50)])
    assert db.execute("PRAGMA page_count").fetchone()[0] <= pages - 50
    assert db.execute("PRAGMA freelist_count").fetchone()[0] > 0  # the rest: reused
    await store.close()


async def test_a_group_that_changes_one_row_twice_keeps_every_change_in_order(
    store: Store,
) -> None:
    """Group commit puts consecutive writes of one job (and of one token or callback) in
    one transaction, where a store may write each table's rows at once: the rows must
    end as written one after the other."""
    job = make_job(1)
    token = Token("01TOKA", SPACE.id, "a", "emit_a", "hash-a", frozenset(), 1.0, None, False)
    hook = Callback("01CB", job.id, SPACE.id, "https://h", None, "{}", 0, 5.0, "pending", 0)
    created = lifecycle.created(job, 1000.0)
    batches = [Changes(inserts=[job_row(job, _inline(job.id, created))], tokens=[token])]
    events = list(created)

    def step(new: list[Event]) -> None:  # the job's state as of this step, its events
        events.extend(new)
        batches.append(Changes(updates=[state_row(job, _inline(job.id, new))]))

    step(lifecycle.deliver(job, 1001.0, "LEASE"))
    step(lifecycle.ack(job, 1002.0, "LEASE"))
    step(lifecycle.complete(job, 1003.0, "ok", {"n": 1}, "LEASE"))
    # Token changes close what came before (`plan`): batches 2 and 3 go together.
    batches[2].token_uses += [(token.id, 7.0), (token.id, 6.0)]  # the later use stays
    batches[2].revoked_tokens += [(token.id, 9.0), (token.id, 8.0)]  # the last one stays
    other = replace(hook, id="01CB2", created_at=2.5)  # beside an int where floats go
    batches[2].callbacks.append(hook)
    batches[3].callbacks += [replace(hook, attempts=1, state="delivered"), other]
    second = make_job(2)  # beside the first in the same statements
    batches[0].inserts.append(job_row(second))
    lifecycle.deliver(second, 1003.0, "LEASE2")
    batches[3].updates.append(state_row(second))
    await store.commit(batches)
    got = await store.get_job_with_events(job.id)
    assert got is not None
    assert job_row(got[0]) == job_row(job) and got[0].status is JobStatus.COMPLETED
    assert got[1] == events
    again = await store.get_job(second.id)
    assert again is not None and job_row(again) == job_row(second)
    assert await store.get_callback(hook.id) == replace(hook, attempts=1, state="delivered")
    assert await store.get_callback(other.id) == other
    [stored] = await store.list_tokens(SPACE.id)
    assert stored == replace(token, last_used_at=7.0, revoked_at=8.0)


def _inline(job_id: str, events: list[Event]) -> str:
    records = [event_record(job_id, e) for e in events]
    return "".join(r for r in records if isinstance(r, str))
