"""One delivery's fault is that delivery's failed try, never the sender's crash: whatever
a transport raises, whatever a stored row holds, the failure is recorded on the job,
retried or given up, and the sender goes on delivering. A try that no retry can change
is given up at once. MockClock, the in-memory store, httpx.MockTransport."""

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

import emit
from emit.callbacks.policy import CallbackPolicy
from emit.callbacks.sender import CallbacksQueued
from emit.codec import JSON
from emit.domain.records import Callback, Space
from emit.store.records import Changes

from .test_sending import HOOK, callback_events

PUSH = "https://wake.example.com/emit"


@dataclass
class Transport:
    """Raises the next of ``faults`` for each request (answers 200 once they run out)."""

    faults: list[BaseException] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            raise self.faults.pop(0)
        return httpx.Response(200)


def runtime(transport: Transport, **options: Any) -> Any:
    return emit.open_runtime(
        None,
        callback_policy=CallbackPolicy(tries=4, timeout=5),
        callback_transport=httpx.MockTransport(transport),
        **options,
    )


async def ended(jobs: emit.SpaceJobs, **fields: Any) -> emit.JobView:
    job = await jobs.create("send", **fields)
    await jobs.kill(job.id)
    return job


async def test_an_unexpected_error_of_a_try_is_a_failed_try_and_the_sender_goes_on(
    autojump_clock: MockClock,
) -> None:
    transport = Transport([RuntimeError("a bug in a transport"), KeyError("x")])
    async with runtime(transport, allow_private_callbacks=True) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await ended(jobs, callback_url=HOOK)
        events = await callback_events(jobs, job.id, 3)
        assert [e.type for e in events] == ["callback_failed"] * 2 + ["callback_sent"]
        assert "RuntimeError: a bug in a transport" in events[0].data["error"]
        assert [e.data.get("willRetry") for e in events[:2]] == [True, True]
        other = await ended(jobs, callback_url=HOOK)  # the sender still delivers
        assert [e.type for e in await callback_events(jobs, other.id, 1)] == ["callback_sent"]


@pytest.mark.parametrize(
    "fault",
    [
        httpx.LocalProtocolError("Too much data for declared Content-Length"),
        httpx.UnsupportedProtocol("no such scheme"),
        UnicodeError("encoding with 'idna' codec failed (UnicodeError: label too long)"),
    ],
)
async def test_a_try_that_no_retry_can_change_is_given_up_at_once(
    autojump_clock: MockClock, fault: BaseException
) -> None:
    transport = Transport([fault])
    async with runtime(transport, allow_private_callbacks=True) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await ended(jobs, callback_url=HOOK)
        [failed] = await callback_events(jobs, job.id, 1)
        assert failed.type == "callback_failed" and failed.data["willRetry"] is False
        await trio.sleep(3600)
        assert len(transport.requests) == 1


POISONS: list[Any] = [
    {"X-Note": "中"},
    {"Content-Length": "1"},
    {"Transfer-Encoding": "chunked"},
    {"X-Note": "a\r\nX-Injected: 1"},
    {"Bad Name": "x"},
    {"X-Number": 1},
    ["not", "an", "object"],
]


async def test_stored_rows_that_can_never_be_sent_are_given_up_at_once(
    autojump_clock: MockClock,
) -> None:
    """Rows from before headers were validated (or written by hand): nothing is sent,
    each is given up on its first try, and the sender carries on."""
    transport = Transport()
    async with runtime(transport, allow_private_callbacks=True) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        rows = []
        for n, headers in enumerate(POISONS):
            job = await ended(jobs)
            row_id = f"01JDQ00000000000000000000{n}"
            row = Callback(
                row_id, job.id, jobs.space_id, HOOK, headers, "{}", 0, 0.0, "pending", 0.0
            )
            rows.append(row)
        await rt.store.commit([Changes(callbacks=rows)])
        assert rt.callbacks is not None
        rt.callbacks.tell_nowait(CallbacksQueued(rows))
        for row in rows:
            [failed] = await callback_events(jobs, row.job_id, 1)
            assert failed.type == "callback_failed" and failed.data["willRetry"] is False
            assert "cannot be sent" in failed.data["error"]
        assert transport.requests == []
        assert await rt.store.pending_callbacks() == []
        good = await ended(jobs, callback_url=HOOK, callback_headers={"X-Note": "café"})
        assert [e.type for e in await callback_events(jobs, good.id, 1)] == ["callback_sent"]
        [request] = transport.requests
        assert (b"x-note", "café".encode("latin-1")) in request.headers.raw


async def test_stored_push_headers_that_cannot_be_sent_lose_the_wake_not_the_sender(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = Transport()
    async with runtime(transport, allow_private_callbacks=True) as rt:
        space = await rt.create_space("s")
        jobs = rt.space(space.id)
        # As stored before push headers were validated: written to the store directly.
        stored: dict[str, JSON] = {"pushUrl": PUSH, "pushHeaders": {"X-Key": "中"}}
        await rt.store.commit(
            [Changes(spaces=[Space(space.id, space.name, space.public_token, 0.0, stored)])]
        )
        await rt.spaces.stop_child(space.id)  # reloads its settings on next use
        with caplog.at_level(logging.WARNING, "emit.callbacks"):
            job = await jobs.create("wake")
            await trio.sleep(1)
        assert transport.requests == []
        assert any(job.id in r.getMessage() and "push wake" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
        done = await ended(jobs, callback_url=HOOK)  # the sender still delivers
        assert [e.type for e in await callback_events(jobs, done.id, 1)] == ["callback_sent"]


class PrivateNames(trio.abc.HostnameResolver):
    """Resolves every name to a private address: an internal name, or DNS rebinding."""

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return [(trio.socket.AF_INET, trio.socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80))]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> Any:
        raise NotImplementedError


async def test_a_name_that_resolves_to_a_private_address_is_refused_and_logged(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    trio.socket.set_custom_hostname_resolver(PrivateNames())
    transport = Transport()
    async with runtime(transport) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        with caplog.at_level(logging.WARNING, "emit.callbacks"):
            job = await ended(jobs, callback_url="https://internal.example.com/hook")
            [failed] = await callback_events(jobs, job.id, 1)
        assert failed.data["willRetry"] is False
        assert "--allow-private-callbacks" in failed.data["error"]
        assert transport.requests == []
        # The refusal, naming the address, then the callback given up at once.
        refused, given_up = [r.getMessage() for r in caplog.records
                             if r.levelno == logging.WARNING]  # fmt: skip
        assert job.id in refused and "10.0.0.7" in refused
        assert job.id in given_up and "given up after 1 try" in given_up
