"""What the embedding API takes from a Python caller that HTTP never could: a str with a
lone surrogate (not Unicode, refused by JSON and SQLite alike) and read-only mappings.
Real SQLite file: a value the store cannot write would fail a group commit there."""

from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import pytest

import emit
from emit.store.base import Store

BAD = "bad \ud800 text"

Call = Callable[[emit.Runtime, emit.SpaceJobs, str], Awaitable[object]]
CALLS: dict[str, tuple[Call, str]] = {
    "job name": (lambda rt, jobs, job: jobs.create(BAD), "name"),
    "idempotency key": (
        lambda rt, jobs, job: jobs.create("n", idempotency_key=BAD),
        "idempotencyKey",
    ),
    "callback header": (
        lambda rt, jobs, job: jobs.create(
            "n", callback_url="https://example.com/h", callback_headers={"X-A": BAD}
        ),
        "callbackHeaders",
    ),
    "fail error": (lambda rt, jobs, job: jobs.fail(job, BAD), "error"),
    "event type": (lambda rt, jobs, job: jobs.event(job, BAD), "type"),
    "progress message": (lambda rt, jobs, job: jobs.progress(job, 5, BAD), "message"),
    "sub-progress stage": (
        lambda rt, jobs, job: jobs.progress(job, 5, "m", sub_progress={BAD: {"percent": 1}}),
        "subProgress",
    ),
    "log message": (lambda rt, jobs, job: jobs.log(job, "info", BAD), "lines[0].message"),
    "kill reason": (lambda rt, jobs, job: jobs.kill(job, BAD), "reason"),
    "space name": (lambda rt, jobs, job: rt.create_space(BAD), "name"),
    "token name": (
        lambda rt, jobs, job: rt.create_token(jobs.space_id, name=BAD, preset="worker"),
        "name",
    ),
    "space setting": (
        lambda rt, jobs, job: rt.update_space(jobs.space_id, {"signingSecret": BAD * 4}),
        "settings",
    ),
}


@pytest.mark.parametrize("where", CALLS)
async def test_a_lone_surrogate_is_refused_naming_the_field_and_changes_nothing(
    where: str,
    new_store: Callable[[], Store],
) -> None:
    call, field = CALLS[where]
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("n")
        await jobs.poll(ack=True)
        before = await jobs.get(job.id)
        with pytest.raises(emit.InvalidRequest, match=r"lone surrogate|not valid UTF-8") as caught:
            await call(rt, jobs, job.id)
        assert caught.value.field == field
        after = await jobs.get(job.id)
        assert (after.status, after.events) == (before.status, before.events)
        assert len(await rt.list_spaces()) == 1
        assert (await jobs.complete(job.id, "done")).status == "completed"  # still serving
    async with emit.open_runtime(new_store()) as rt:  # and nothing half-written on disk
        assert (await rt.space(jobs.space_id).get(job.id)).status == "completed"


async def test_read_only_mappings_are_taken_and_kept_as_plain_json(
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        headers: Any = MappingProxyType({"X-Trace": "t"})
        backoff: Any = MappingProxyType({"initialSeconds": 1, "factor": 2, "maxSeconds": 4})
        job = await jobs.create(
            "n", callback_url="https://example.com/h", callback_headers=headers,
            retry_backoff=backoff,
        )  # fmt: skip
        await jobs.poll(ack=True)
        stages = MappingProxyType({"upload": MappingProxyType({"percent": 10})})
        view = await jobs.progress(job.id, 50, "half", sub_progress=stages)
        assert view.progress == {
            "percent": 50, "message": "half", "subProgress": {"upload": {"percent": 10}},
        }  # fmt: skip
        failed = await jobs.fail(job.id, "once")
        assert failed.status == "scheduled"  # the backoff was read: a retry in 1 s
    async with emit.open_runtime(new_store()) as rt:
        again = await rt.store.get_job(job.id)  # what the sender reads (reads redact it)
        assert again is not None and again.callback_headers == {"X-Trace": "t"}


async def test_a_lone_surrogate_in_a_query_finds_nothing_or_is_refused(
    new_store: Callable[[], Store],
) -> None:
    async with emit.open_runtime(new_store()) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("n")
        with pytest.raises(emit.InvalidRequest) as caught:
            await jobs.list(name=BAD)
        assert caught.value.field == "name"
        with pytest.raises(emit.InvalidRequest) as caught:
            await jobs.logs(job.id, q=BAD)
        assert caught.value.field == "q"
        assert await rt.authenticate(BAD) is None
        assert (await jobs.list())[1] == 1  # the space serves on
