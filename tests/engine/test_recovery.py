"""Recovery: a runtime reopened on its data directory rebuilds every space's queue,
deadlines and counters from the store, and handles at once the deadlines that passed
while it was down. On every store (real time: no autojump clock here); the tests that
read the SQLite file itself run on SQLite alone."""

import enum
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import emit
from emit import JobStatus
from emit.domain.job import Job
from emit.isotime import iso
from emit.store.base import Store
from emit.store.records import INLINE_ENTRY, INLINE_EVENTS


async def test_every_state_survives_a_restart(new_store: Callable[[], Store]) -> None:
    async with emit.open_runtime(new_store()) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        pending = await jobs.create("p", priority=5)
        delivered = await jobs.create("d")
        running = await jobs.create("r")
        await jobs.claim(delivered.id)
        lease = (await jobs.claim(running.id)).lease_id
        await jobs.ack(running.id)
        await jobs.progress(running.id, 40, "busy")
        scheduled = await jobs.create("s", scheduled_for=iso(rt.clock.now() + 3600))
        done = await jobs.create("c")
        await jobs.claim(done.id)
        await jobs.complete(done.id, {"ok": True})
        keyed = await jobs.create("k", idempotency_key="once")
        counts = await jobs.counts()
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space(space.id)
        assert await jobs.counts() == counts
        for job, status in [
            (pending, "pending"),
            (delivered, "delivered"),
            (running, "running"),
            (scheduled, "scheduled"),
            (done, "completed"),
        ]:
            assert (await jobs.get(job.id)).status == status
        # The queue is rebuilt in order; the lease of the running job still fences.
        assert [d.id for d in await jobs.poll(count=5)] == [pending.id, keyed.id]
        assert (await jobs.get(running.id)).progress == {
            "percent": 40, "message": "busy", "subProgress": None,
        }  # fmt: skip
        assert (await jobs.complete(running.id, 1, lease_id=lease)).status == "completed"
        # Idempotency keys are remembered, and new ids keep sorting after old ones.
        assert (await jobs.create("k", idempotency_key="once")).id == keyed.id
        newer = await jobs.create("n")
        assert newer.id > keyed.id


async def test_deadlines_that_passed_while_down_are_handled_at_once(
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        delivered = await jobs.create("d", timeout_seconds=60)
        running = await jobs.create("r", timeout_seconds=60, max_retries=0)
        scheduled = await jobs.create("s", scheduled_for=iso(rt.clock.now() + 600))
        await jobs.claim(delivered.id)
        await jobs.claim(running.id)
        await jobs.ack(running.id)
    # Back an hour later.
    async with emit.open_runtime(new_store(), start_time=time.time() + 3600) as rt:
        jobs = rt.space(space.id)
        counts = await jobs.counts()
        assert counts[JobStatus.PENDING] == 2 and counts[JobStatus.DEAD] == 1
        assert (await jobs.get(running.id)).result == {"error": "timeout"}
        events = (await jobs.get(delivered.id)).events or ()
        assert [e.type for e in events][-1] == "delivery_timeout"
        assert {d.id for d in await jobs.poll(count=5)} == {delivered.id, scheduled.id}


async def test_spaces_and_tokens_survive_a_restart(new_store: Callable[[], Store]) -> None:
    async with emit.open_runtime(new_store()) as rt:
        space = await rt.create_space("email")
        token = await rt.create_token(space.id, name="worker", preset="worker")
        revoked = await rt.create_token(space.id, name="old", scopes=["jobs:create"])
        await rt.revoke_token(space.id, revoked.id)
    async with emit.open_runtime(new_store()) as rt:
        assert [s.name for s in await rt.list_spaces()] == ["email"]
        found = await rt.authenticate(token.key)
        assert found is not None and found.scopes == token.scopes
        assert await rt.authenticate(revoked.key) is None
        public = await rt.authenticate(space.public_token)
        assert public is not None and public.scopes == frozenset({"jobs:read:progress"})


class _Kind(enum.StrEnum):
    SEND = "send"

    def __str__(self) -> str:
        return "not the value"


class _Level(enum.IntEnum):
    HIGH = 9


@pytest.mark.stores("sqlite", "postgresql")  # the one in memory keeps the values given
async def test_enum_values_a_caller_passes_are_written_as_their_plain_values(
    new_store: Callable[[], Store],
) -> None:
    """The store's writer takes only exact str, int and float values; an enum passed as
    a name, a priority or a log line is written as the value it stands for."""
    async with emit.open_runtime(new_store()) as rt:
        space = await rt.create_space(_Kind.SEND)
        jobs = rt.space(space.id)
        job = await jobs.create(_Kind.SEND, priority=_Level.HIGH, idempotency_key=_Kind.SEND)
        await jobs.claim(job.id)
        await jobs.log(job.id, "info", _Kind.SEND)
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space(space.id)
        stored = await jobs.get(job.id)
        assert (type(stored.name), stored.name, type(stored.priority)) == (str, "send", int)
        assert stored.priority == 9
        [line] = await jobs.logs(job.id)
        assert (type(line.message), line.message) == (str, "send")
        assert [s.name for s in await rt.list_spaces()] == ["send"]


async def test_a_long_history_survives_a_restart_whole_and_in_order(tmp_path: Path) -> None:
    # A job's first events are kept in its row, later or long ones in rows of their own
    # (emit/store/records.py): read back, they are one history, gap-free.
    async with emit.open_runtime(tmp_path) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        job = await jobs.create("long")
        await jobs.poll(ack=True)
        for n in range(INLINE_EVENTS + 5):
            message = "x" * INLINE_ENTRY if n == 7 else f"step {n}"
            await jobs.progress(job.id, n, message)
        await jobs.complete(job.id, {"done": True})
        before = (await jobs.get(job.id)).events
    async with emit.open_runtime(tmp_path) as rt:
        after = (await rt.space(space.id).get(job.id)).events
    assert after == before and after is not None
    assert [e.seq for e in after] == list(range(1, len(after) + 1))
    assert [e.type for e in after][:3] == ["created", "delivered", "started"]
    assert after[-1].type == "completed" and after[-1].data == {"result": {"done": True}}
    assert [e.data["message"] for e in after[3:-1] if isinstance(e.data, dict)] == [
        "x" * INLINE_ENTRY if n == 7 else f"step {n}" for n in range(INLINE_EVENTS + 5)
    ]
    db = sqlite3.connect(tmp_path / "emit.db")
    own_rows = [seq for (seq,) in db.execute("SELECT seq FROM job_events ORDER BY seq")]
    db.close()
    assert own_rows == [11, *range(INLINE_EVENTS + 1, len(after) + 1)]


async def test_a_job_is_read_with_its_events_as_of_one_commit(
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j")
        await jobs.poll(ack=True)
        store = rt.store
        read_job = store.get_job

        async def read_then_complete(job_id: str) -> Job | None:
            # A commit that lands right after the job's row was read, before its events.
            found = await read_job(job_id)
            await jobs.complete(job_id, "done")
            return found

        store.get_job = read_then_complete  # type: ignore[method-assign]
        view = await jobs.get(job.id)
        events = view.events or ()
        assert (view.status, events[-1].type) in {
            ("running", "started"),
            ("completed", "completed"),
        }
