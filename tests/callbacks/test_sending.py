"""Webhook delivery on MockClock with the in-memory store and httpx.MockTransport: the
body and headers, the signature, backoff between retries, giving up, redirects not
followed, private targets refused, and every try recorded on the job."""

import hashlib
import hmac
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
import pytest
import trio
from trio.testing import MockClock

import emit
from emit.callbacks.policy import CallbackPolicy

HOOK = "https://hooks.example.com/emit"


@dataclass
class Receiver:
    """Answers each request with the next status (200 once they run out)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[float, httpx.Request]] = field(default_factory=list)
    hang: bool = False
    arrived: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((trio.current_time(), request))
        self.arrived.set()
        if self.hang:
            await trio.sleep_forever()
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Location": "https://elsewhere.example.com/"} if status == 302 else {}
        return httpx.Response(status, headers=headers)


@dataclass
class Setup:
    rt: emit.Runtime
    jobs: emit.SpaceJobs
    receiver: Receiver


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    receiver = Receiver()
    async with emit.open_runtime(
        None,
        callback_policy=CallbackPolicy(tries=4, timeout=5),
        callback_transport=httpx.MockTransport(receiver),
        allow_private_callbacks=True,  # no DNS here: the mock answers for every host
    ) as rt:
        space = await rt.create_space("s")
        yield Setup(rt, rt.space(space.id), receiver)


async def finish(jobs: emit.SpaceJobs, **fields: object) -> emit.JobView:
    job = await jobs.create("send", payload={"n": 1}, callback_url=HOOK, **fields)  # type: ignore[arg-type]
    await jobs.claim(job.id)
    await jobs.complete(job.id, {"sent": True})
    return job


class Recorded(NamedTuple):
    """A callback event: its type and its data (always an object)."""

    type: str
    data: dict[str, Any]


async def callback_events(jobs: emit.SpaceJobs, job_id: str, count: int) -> list[Recorded]:
    """Wait (on the clock the test drives) until ``count`` callback events are recorded."""
    for _ in range(10_000):
        events = [e for e in (await jobs.get(job_id)).events or () if e.type.startswith("callback")]
        if len(events) >= count:
            recorded = [Recorded(e.type, e.data) for e in events if isinstance(e.data, dict)]
            assert len(recorded) == len(events), "a callback event without an object as data"
            return recorded
        await trio.sleep(0.01)
    raise AssertionError(f"fewer than {count} callback events")


async def test_the_outcome_is_posted_with_the_documented_body_and_headers(
    autojump_clock: MockClock, setup: Setup
) -> None:
    await setup.rt.update_space(setup.jobs.space_id, {"signingSecret": "k" * 32})
    job = await finish(setup.jobs, callback_headers={"Authorization": "Bearer hook-token"})
    [sent] = await callback_events(setup.jobs, job.id, 1)
    assert sent.type == "callback_sent"
    assert sent.data == {"url": HOOK, "retryAttempt": 0, "statusCode": 200}
    [(_, request)] = setup.receiver.requests
    body = json.loads(request.content)
    assert body["jobId"] == job.id and body["status"] == "completed"
    assert body["result"] == {"sent": True} and body["attemptNumber"] == 0
    assert set(body) == {
        "jobId",
        "spaceId",
        "name",
        "status",
        "attemptNumber",
        "result",
        "timestamp",
    }
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("emit/")
    assert request.headers["authorization"] == "Bearer hook-token"
    t, v1 = (part.split("=", 1)[1] for part in request.headers["emit-signature"].split(","))
    expected = hmac.new(b"k" * 32, f"{t}.".encode() + request.content, hashlib.sha256)
    assert hmac.compare_digest(v1, expected.hexdigest())


async def test_the_job_headers_replace_the_defaults_whatever_their_case(
    autojump_clock: MockClock, setup: Setup
) -> None:
    """Spec §5: the job's callbackHeaders go on top of Content-Type and User-Agent: one
    of each name is sent, never both. A job cannot bring its own Emit-Signature."""
    await setup.rt.update_space(setup.jobs.space_id, {"signingSecret": "k" * 32})
    mine = {"content-type": "text/plain", "USER-AGENT": "mine", "Emit-signature": "forged"}
    job = await finish(setup.jobs, callback_headers=mine)
    await callback_events(setup.jobs, job.id, 1)
    [(_, request)] = setup.receiver.requests
    assert request.headers.get_list("content-type") == ["text/plain"]
    assert request.headers.get_list("user-agent") == ["mine"]
    [signed] = request.headers.get_list("emit-signature")
    t, v1 = (part.split("=", 1)[1] for part in signed.split(","))
    expected = hmac.new(b"k" * 32, f"{t}.".encode() + request.content, hashlib.sha256)
    assert hmac.compare_digest(v1, expected.hexdigest())


async def test_dead_and_killed_jobs_call_back_too(autojump_clock: MockClock, setup: Setup) -> None:
    dead = await setup.jobs.create("x", callback_url=HOOK, max_retries=0)
    await setup.jobs.claim(dead.id)
    await setup.jobs.fail(dead.id, "boom")
    killed = await setup.jobs.create("y", callback_url=HOOK)
    await setup.jobs.kill(killed.id, "enough")
    await callback_events(setup.jobs, dead.id, 1)
    await callback_events(setup.jobs, killed.id, 1)
    bodies = {
        json.loads(r.content)["jobId"]: json.loads(r.content) for _, r in setup.receiver.requests
    }
    assert (bodies[dead.id]["status"], bodies[dead.id]["result"]) == ("dead", {"error": "boom"})
    assert bodies[killed.id]["result"] == {"reason": "enough"}


async def test_failures_are_retried_with_growing_waits_then_given_up(
    autojump_clock: MockClock, setup: Setup
) -> None:
    setup.receiver.statuses = [500, 503, 302, 500]  # a redirect is not followed: a failure
    job = await finish(setup.jobs)
    events = await callback_events(setup.jobs, job.id, 4)
    assert [e.type for e in events] == ["callback_failed"] * 4
    assert [e.data["willRetry"] for e in events] == [True, True, True, False]
    assert [e.data["statusCode"] for e in events] == [500, 503, 302, 500]
    times = [at for at, _ in setup.receiver.requests]
    waits = [b - a for a, b in itertools.pairwise(times)]
    for wait, base in zip(waits, [1, 3, 9], strict=True):
        assert base * 0.8 <= wait <= base * 1.2 + 0.1  # the backoff, within its jitter
    assert len(setup.receiver.requests) == 4  # given up after the last try
    await trio.sleep(3600)
    assert len(setup.receiver.requests) == 4


async def test_a_retry_that_succeeds_is_recorded_as_sent(
    autojump_clock: MockClock, setup: Setup
) -> None:
    setup.receiver.statuses = [500]
    job = await finish(setup.jobs)
    events = await callback_events(setup.jobs, job.id, 2)
    assert [e.type for e in events] == ["callback_failed", "callback_sent"]
    assert events[1].data["retryAttempt"] == 1


async def test_a_hung_receiver_times_out_and_never_blocks_other_jobs(
    autojump_clock: MockClock, setup: Setup
) -> None:
    setup.receiver.hang = True
    slow = await finish(setup.jobs)
    await setup.receiver.arrived.wait()
    start = trio.current_time()
    other = await setup.jobs.create("quick")  # job processing goes on meanwhile
    assert trio.current_time() == start and other.status == "pending"
    [failed] = await callback_events(setup.jobs, slow.id, 1)
    assert "timed out after 5 s" in failed.data["error"]


async def test_private_targets_are_refused_unless_allowed(autojump_clock: MockClock) -> None:
    """A literal private address is refused when the job is made (a name that resolves to
    one is refused at the try: test_isolation.py)."""
    receiver = Receiver()
    async with emit.open_runtime(None, callback_transport=httpx.MockTransport(receiver)) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        with pytest.raises(emit.InvalidRequest, match="--allow-private-callbacks") as caught:
            await jobs.create("x", callback_url="http://127.0.0.1:9/hook")
        assert caught.value.field == "callbackUrl"
        assert (await jobs.list())[1] == 0
    async with emit.open_runtime(
        None, callback_transport=httpx.MockTransport(receiver), allow_private_callbacks=True
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("x", callback_url="http://127.0.0.1:9/hook")
        await jobs.kill(job.id)
        [sent] = await callback_events(jobs, job.id, 1)
        assert sent.type == "callback_sent" and len(receiver.requests) == 1
