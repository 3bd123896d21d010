"""Recovery: a runtime reopened on its data directory rebuilds every space's queue,
deadlines and counters from the store, and handles at once the deadlines that passed
while it was down. Real SQLite file, real clock (no autojump: the store uses threads)."""

import enum
import time
from pathlib import Path

import emit
from emit import JobStatus
from emit.clock import iso


async def test_every_state_survives_a_restart(tmp_path: Path) -> None:
    async with emit.open_runtime(tmp_path) as rt:
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
    async with emit.open_runtime(tmp_path) as rt:
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


async def test_deadlines_that_passed_while_down_are_handled_at_once(tmp_path: Path) -> None:
    async with emit.open_runtime(tmp_path) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        delivered = await jobs.create("d", timeout_seconds=60)
        running = await jobs.create("r", timeout_seconds=60, max_retries=0)
        scheduled = await jobs.create("s", scheduled_for=iso(rt.clock.now() + 600))
        await jobs.claim(delivered.id)
        await jobs.claim(running.id)
        await jobs.ack(running.id)
    # Back an hour later.
    async with emit.open_runtime(tmp_path, start_time=time.time() + 3600) as rt:
        jobs = rt.space(space.id)
        counts = await jobs.counts()
        assert counts[JobStatus.PENDING] == 2 and counts[JobStatus.DEAD] == 1
        assert (await jobs.get(running.id)).result == {"error": "timeout"}
        events = (await jobs.get(delivered.id)).events or ()
        assert [e.type for e in events][-1] == "delivery_timeout"
        assert {d.id for d in await jobs.poll(count=5)} == {delivered.id, scheduled.id}


async def test_spaces_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    async with emit.open_runtime(tmp_path) as rt:
        space = await rt.create_space("email")
        token = await rt.create_token(space.id, name="worker", preset="worker")
        revoked = await rt.create_token(space.id, name="old", scopes=["jobs:create"])
        await rt.revoke_token(space.id, revoked.id)
    async with emit.open_runtime(tmp_path) as rt:
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


async def test_enum_values_a_caller_passes_are_written_as_their_plain_values(
    tmp_path: Path,
) -> None:
    """The store's writer takes only exact str, int and float values; an enum passed as
    a name, a priority or a log line is written as the value it stands for."""
    async with emit.open_runtime(tmp_path) as rt:
        space = await rt.create_space(_Kind.SEND)
        jobs = rt.space(space.id)
        job = await jobs.create(_Kind.SEND, priority=_Level.HIGH, idempotency_key=_Kind.SEND)
        await jobs.claim(job.id)
        await jobs.log(job.id, "info", _Kind.SEND)
    async with emit.open_runtime(tmp_path) as rt:
        jobs = rt.space(space.id)
        stored = await jobs.get(job.id)
        assert (type(stored.name), stored.name, type(stored.priority)) == (str, "send", int)
        assert stored.priority == 9
        [line] = await jobs.logs(job.id)
        assert (type(line.message), line.message) == (str, "send")
        assert [s.name for s in await rt.list_spaces()] == ["send"]
