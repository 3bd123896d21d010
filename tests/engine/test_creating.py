"""Creating jobs: defaults, batches that are all or nothing, idempotency, scheduling."""

from collections.abc import Mapping
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import emit
from emit import JobStatus
from emit.isotime import iso


async def test_a_job_is_created_pending_with_the_spec_defaults(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("send-email", payload={"to": "a@b.c"})
    assert job.status == "pending"
    assert (job.priority, job.max_retries, job.timeout_seconds, job.attempt_number) == (
        0,
        3,
        300,
        0,
    )
    assert job.payload == {"to": "a@b.c"}
    assert len(job.id) == 26
    stored = await jobs.get(job.id)
    assert [event.type for event in stored.events or ()] == ["created"]
    wire = stored.to_wire()
    assert wire["status"] == "pending" and wire["maxRetries"] == 3
    assert wire["createdAt"].endswith("Z") and len(wire["createdAt"]) == 24


async def test_a_bad_item_refuses_the_whole_batch_naming_its_index(
    jobs: emit.SpaceJobs,
) -> None:
    items: list[dict[str, Any]] = [
        {"name": "ok"},
        {"name": "ok"},
        {"name": "bad", "maxRetries": 26},
    ]
    with pytest.raises(emit.InvalidRequest, match=r"jobs\[2\]: maxRetries") as caught:
        await jobs.create_many(items)
    assert caught.value.field == "maxRetries"
    assert (await jobs.list())[1] == 0  # nothing was created
    assert sum((await jobs.counts()).values()) == 0


async def test_values_a_typed_caller_holds_fit_the_api_and_are_written_as_json(
    jobs: emit.SpaceJobs,
) -> None:
    # mypy (make test) checks these calls: JSON's dict is invariant, so a dict[str, int]
    # or a tuple only fits because the API takes read-only JSON in.
    payload: dict[str, int] = {"i": 1}
    backoff: dict[str, int] = {"initialSeconds": 1, "factor": 2, "maxSeconds": 4}
    headers: Mapping[str, str] = {"X-Trace": "t"}
    job = await jobs.create(
        "n", payload, retry_backoff=backoff, callback_url="https://example.com/hook",
        callback_headers=headers,
    )  # fmt: skip
    assert job.payload == {"i": 1}
    await jobs.poll(ack=True)
    data: tuple[str, int] = ("thumbnail", 2)
    await jobs.event(job.id, "shot", data)
    result: dict[str, list[int]] = {"sizes": [1, 2]}
    done = await jobs.complete(job.id, result)
    assert done.result == {"sizes": [1, 2]}
    events = (await jobs.get(job.id)).events or ()
    assert [e.data for e in events if e.type == "event"] == [
        {"type": "shot", "data": ["thumbnail", 2]}
    ]


async def test_a_batch_is_created_in_order(jobs: emit.SpaceJobs) -> None:
    created = await jobs.create_many([{"name": f"n{i}", "payload": i} for i in range(100)])
    assert [job.payload for job in created] == list(range(100))
    assert [job.id for job in created] == sorted(job.id for job in created)
    assert (await jobs.counts())[JobStatus.PENDING] == 100


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "x" * 201),
        ("priority", 1001),
        ("maxRetries", -1),
        ("timeoutSeconds", 0),
        ("timeoutSeconds", 86401),
        ("callbackUrl", "ftp://example.com"),
        ("callbackHeaders", {"a": 1}),
        ("scheduledFor", "yesterday"),
        ("retryBackoff", {"initialSeconds": -1}),
        ("color", "blue"),
    ],
)
async def test_bad_fields_are_refused_and_named(
    jobs: emit.SpaceJobs, field: str, value: object
) -> None:
    item = {"name": "job", field: value}
    with pytest.raises(emit.InvalidRequest) as caught:
        await jobs.create_many([item])
    assert field in caught.value.message


async def test_the_same_idempotency_key_returns_the_existing_job(jobs: emit.SpaceJobs) -> None:
    first = await jobs.create("charge", payload=1, idempotency_key="order-7")
    [(again, created)] = await jobs.submit(
        [{"name": "charge", "payload": 2, "idempotencyKey": "order-7"}]
    )
    assert not created
    assert again.id == first.id and again.payload == 1
    # Still found once the job has finished and left memory.
    [delivery] = await jobs.poll()
    await jobs.complete(delivery.id, "done")
    [(after, created)] = await jobs.submit([{"name": "charge", "idempotencyKey": "order-7"}])
    assert not created and after.id == first.id and after.status == "completed"
    assert (await jobs.list())[1] == 1


async def test_idempotency_keys_are_per_space(rt: emit.Runtime) -> None:
    a = rt.space((await rt.create_space("a")).id)
    b = rt.space((await rt.create_space("b")).id)
    job_a = await a.create("x", idempotency_key="k")
    job_b = await b.create("x", idempotency_key="k")
    assert job_a.id != job_b.id


async def test_a_scheduled_job_becomes_pending_at_its_time(
    autojump_clock: MockClock, rt: emit.Runtime, jobs: emit.SpaceJobs
) -> None:
    start = rt.clock.now()
    job = await jobs.create("later", scheduled_for=iso(start + 60))
    assert job.status == "scheduled"
    assert await jobs.poll() == []
    await trio.sleep(59)
    assert await jobs.poll() == []
    await trio.sleep(2)
    [delivery] = await jobs.poll()
    assert delivery.id == job.id


async def test_scheduled_for_must_be_in_the_future(rt: emit.Runtime, jobs: emit.SpaceJobs) -> None:
    with pytest.raises(emit.InvalidRequest, match="scheduledFor must be in the future"):
        await jobs.create("late", scheduled_for=iso(rt.clock.now() - 1))


async def test_a_keyed_create_replayed_after_its_time_answers_the_job_it_made(
    autojump_clock: MockClock, rt: emit.Runtime, jobs: emit.SpaceJobs
) -> None:
    """A client retrying a scheduled create (same idempotency key, same body) once its
    time has passed gets the job it made, not a 400 (spec §4); a new keyed job with a
    past time is still refused, naming its index in a batch, and nothing is made."""
    item = {"name": "later", "scheduledFor": iso(rt.clock.now() + 10), "idempotencyKey": "k"}
    [(made, created)] = await jobs.submit([item])
    assert created
    await trio.sleep(11)
    [(again, created)] = await jobs.submit([item])
    assert (again.id, created) == (made.id, False)
    late = {"name": "late", "scheduledFor": iso(rt.clock.now() - 1), "idempotencyKey": "new"}
    with pytest.raises(emit.InvalidRequest, match=r"jobs\[1\]: scheduledFor must be in the"):
        await jobs.submit([{"name": "ok", "idempotencyKey": "other"}, late])
    with pytest.raises(emit.InvalidRequest, match=r"^scheduledFor must be in the future"):
        await jobs.submit([late], batch=False)
    assert (await jobs.list())[1] == 1


async def test_a_job_of_an_unknown_space_is_404(rt: emit.Runtime) -> None:
    with pytest.raises(emit.NotFound):
        await rt.space("0" * 26).create("x")
