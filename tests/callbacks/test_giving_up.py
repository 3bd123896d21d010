"""An operator hears of a webhook given up: one WARNING line naming the callback, the
job, the target and the last error, once the tries run out (or at once when no retry
can help). MockClock, the in-memory store, httpx.MockTransport."""

import logging

import httpx
import pytest
import trio
from trio.testing import MockClock

from .test_isolation import Transport, ended, runtime
from .test_sending import HOOK, callback_events


def given_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "emit.callbacks" and r.levelno == logging.WARNING
            and "given up" in r.getMessage()]  # fmt: skip


async def test_a_callback_whose_tries_run_out_is_a_warning_with_its_cause(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = Transport([httpx.ConnectError("connection refused")] * 4)  # tries=4
    caplog.set_level(logging.WARNING, "emit.callbacks")
    async with runtime(transport, allow_private_callbacks=True) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        with trio.fail_after(3600):
            job = await ended(jobs, callback_url=HOOK)
            events = await callback_events(jobs, job.id, 4)
        assert [e.data["willRetry"] for e in events] == [True, True, True, False]
        [line] = given_up(caplog)
        assert job.id in line and HOOK in line and "4 tries" in line
        assert "connection refused" in line


async def test_a_callback_that_succeeds_after_failing_is_no_warning(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = Transport([httpx.ConnectError("connection refused")])
    caplog.set_level(logging.WARNING, "emit.callbacks")
    async with runtime(transport, allow_private_callbacks=True) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        with trio.fail_after(3600):
            job = await ended(jobs, callback_url=HOOK)
            events = await callback_events(jobs, job.id, 2)
        assert [e.type for e in events] == ["callback_failed", "callback_sent"]
        assert given_up(caplog) == []
