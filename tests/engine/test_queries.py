"""Reading: a job with its events, lists, counts, logs; and spaces seeing only their own."""

from typing import Any

import pytest

import emit


async def test_list_is_newest_first_with_filters_and_a_total(jobs: emit.SpaceJobs) -> None:
    created = await jobs.create_many(
        [{"name": "a" if i % 2 else "b", "payload": i} for i in range(10)]
    )
    page, total = await jobs.list(limit=3)
    assert total == 10
    assert [job.id for job in page] == [job.id for job in reversed(created)][:3]
    page, total = await jobs.list(name="a", limit=100)
    assert total == 5 and all(job.name == "a" for job in page)
    await jobs.poll(count=2)
    page, total = await jobs.list(status="delivered")
    assert total == 2
    page, total = await jobs.list(limit=4, offset=8)
    assert len(page) == 2 and total == 10
    with pytest.raises(emit.InvalidRequest, match="status"):
        await jobs.list(status="sleeping")
    with pytest.raises(emit.InvalidRequest, match="limit"):
        await jobs.list(limit=101)


async def test_counts_follow_every_transition(jobs: emit.SpaceJobs) -> None:
    await jobs.create_many([{"name": "j", "maxRetries": 0} for _ in range(4)])
    a, b, c = await jobs.poll(count=3)
    await jobs.ack(b.id)
    await jobs.complete(c.id)
    await jobs.fail(a.id, "x")
    counts = await jobs.counts()
    assert {status.value: n for status, n in counts.items() if n} == {
        "pending": 1,
        "running": 1,
        "completed": 1,
        "dead": 1,
    }


async def test_events_record_every_change_in_order(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    await jobs.poll()
    await jobs.ack(job.id)
    await jobs.progress(job.id, 50, "half", sub_progress={"upload": {"percent": 10}})
    await jobs.checkpoint(job.id, {"at": 5})
    await jobs.event(job.id, "thumbnail", {"url": "x"})
    await jobs.complete(job.id, {"done": True})
    stored = await jobs.get(job.id)
    events = stored.events or ()
    assert [e.seq for e in events] == list(range(1, 8))
    assert [e.type for e in events] == [
        "created", "delivered", "started", "progress", "checkpoint", "event", "completed",
    ]  # fmt: skip
    assert events[3].data == {
        "percent": 50, "message": "half", "subProgress": {"upload": {"percent": 10}},
    }  # fmt: skip
    assert events[5].data == {"type": "thumbnail", "data": {"url": "x"}}
    assert stored.progress == events[3].data


async def test_logs_are_kept_apart_with_their_own_seq_and_filters(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    await jobs.poll(ack=True)
    lines: list[dict[str, Any]] = [
        {"level": "debug", "message": "connecting"},
        {"level": "info", "message": "sent 10 mails", "fields": {"n": 10}},
        {"level": "error", "message": "bounce from x", "ts": "2026-01-01T00:00:00Z"},
    ]
    assert await jobs.log_lines(job.id, lines) == 3
    assert [line.seq for line in await jobs.logs(job.id)] == [1, 2, 3]
    assert [line.message for line in await jobs.logs(job.id, after=1)] == [
        "sent 10 mails",
        "bounce from x",
    ]
    assert [line.seq for line in await jobs.logs(job.id, level="info")] == [2, 3]
    assert [line.seq for line in await jobs.logs(job.id, q="mail")] == [2]
    assert [line.seq for line in await jobs.logs(job.id, limit=1)] == [1]
    with pytest.raises(emit.InvalidRequest, match="level"):
        await jobs.log_lines(job.id, [{"level": "loud", "message": "x"}])
    # Logs are not events.
    assert [e.type for e in (await jobs.get(job.id)).events or ()][-1] == "started"


async def test_a_job_of_another_space_is_not_found(rt: emit.Runtime, jobs: emit.SpaceJobs) -> None:
    other = rt.space((await rt.create_space("other")).id)
    job = await jobs.create("j")
    for call in (other.get, other.ack, other.kill, other.retry, other.claim, other.logs):
        with pytest.raises(emit.NotFound):
            await call(job.id)
    assert (await jobs.get(job.id)).status == "pending"
