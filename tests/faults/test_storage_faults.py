"""A store that fails under a running server: on write (a full disk), on COMMIT with an
I/O error, and by its writer process dying. For each, clients get a clear 503 in the
spec's error shape within seconds, nothing is half-applied, readiness says why, memory
stays flat however long it lasts, and the same server serves normally once the fault
clears."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import httpx
import pytest
import trio

from emit.isotime import iso
from emit.space.actor import SpaceActor

from ..http.conftest import Server
from ..writer_faults import Faults

CAUSES = {
    "write": ("database or disk is full", "nothing was accepted"),
    "commit": ("disk I/O error", "may or may not have been saved"),
    "die": ("ended before it answered", "may or may not have been saved"),
}
ANSWER_WITHIN = 10.0
"""Seconds a refused request may take at most: a clear answer, not a hang. (Each
failure ends the space's incarnation, and the next request waits for its restart,
after the supervisor's backoff: up to 5 s.)"""


REFUSED = 6
"""Refused writes over which memory must stay flat (each one a space incarnation)."""


def jobs_path(server: Server, tail: str = "") -> str:
    return f"/api/v1/spaces/{server.space}/jobs{tail}"


async def create(server: Server, body: Any) -> httpx.Response:
    with trio.fail_after(ANSWER_WITHIN):
        return await server.client.post(
            jobs_path(server), json=body, headers=server.headers("producer")
        )


def assert_unavailable(response: httpx.Response, mentions: str = "") -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"code", "message"}
    assert body["error"]["code"] == "unavailable"
    assert mentions in body["error"]["message"]


async def stored_jobs(server: Server) -> set[str]:
    response = await server.client.get(
        jobs_path(server), params={"limit": 100}, headers=server.headers("producer")
    )
    assert response.status_code == 200
    return {job["id"] for job in response.json()}


def live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until_created(server: Server) -> dict[str, Any]:
    """Create one job once the fault has cleared: at most one 503 of a space still
    restarting from the last failure, then 201."""
    for _ in range(2):
        response = await create(server, {"name": "after"})
        if response.status_code == 201:
            made: dict[str, Any] = response.json()
            return made
        assert_unavailable(response, "restarting")
    raise AssertionError(response.text)


@pytest.mark.parametrize("fault", list(CAUSES))
async def test_a_storage_fault_is_a_clear_503_and_clears_without_a_restart(
    server: Server,
    faults: Faults,
    fault: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cause, told = CAUSES[fault]
    before = await create(server, {"name": "before"})
    assert before.status_code == 201
    kept = before.json()["id"]

    faults.set(fault)
    first = await create(server, [{"name": "lost"}] * 3)
    assert_unavailable(first, told)

    async def refuse(times: int) -> None:
        for _ in range(times):
            assert_unavailable(await create(server, [{"name": "lost"}] * 3))

    # The supervisor logs each crash with its traceback, which holds the incarnation;
    # the test's log capture would keep them all. Not the server's memory: kept out.
    monkeypatch.setattr(logging.getLogger("actors"), "disabled", True)
    await refuse(3)  # warm-up: the first incarnations, caches
    objects, fds = live_objects(), open_fds()
    await refuse(REFUSED)
    grown = live_objects() - objects
    assert grown < 1500, f"{grown} objects more after {REFUSED} refused writes"
    assert open_fds() <= fds + 2  # no socket or process left behind per failure
    incarnations = sum(isinstance(o, SpaceActor) for o in gc.get_objects())
    assert incarnations <= 3  # the live one, and at most the last crashes held

    with trio.fail_after(ANSWER_WITHIN):
        ready = await server.client.get("/readyz")
    assert_unavailable(ready, cause)
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and cause in r.message]
    assert logged and len(logged) < 5  # once per cause, not once per refused write

    faults.clear()  # the same process, no restart
    with trio.fail_after(ANSWER_WITHIN):
        assert (await server.client.get("/readyz")).status_code == 200
    after = await until_created(server)
    assert await stored_jobs(server) == {kept, after["id"]}  # nothing half-applied
    recovered = [r.getMessage() for r in caplog.records
                 if r.name == "emit.store" and r.levelno == logging.WARNING]  # fmt: skip
    assert len(recovered) == 1 and "again" in recovered[0] and cause in recovered[0]
    with trio.fail_after(ANSWER_WITHIN):
        stats = await server.client.get(
            f"/api/v1/spaces/{server.space}/stats", headers=server.headers("producer")
        )
    assert stats.json()["counts"]["pending"] == 2
    polled = await server.client.post(
        jobs_path(server, "/poll"), json={"count": 2}, headers=server.headers("worker")
    )
    assert {job["id"] for job in polled.json()["jobs"]} == {kept, after["id"]}


class _Failed(logging.Handler):
    """Sets an event when the store logs that it cannot write."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.event = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "cannot write" in record.getMessage():
            self.event.set()


async def test_a_space_whose_write_fails_while_deadlines_fall_due_still_answers(
    server: Server, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ten times more scheduled jobs falling due at once than a space expires in one
    # wakeup: the write of the first thousand fails while the space works through the
    # rest, which are then due while it is broken.
    due = iso(server.rt.clock.now() + 3)
    for _ in range(10):
        made = await create(server, [{"name": "later", "scheduledFor": due}] * 1000)
        assert made.status_code == 201, made.text
    failed = _Failed()
    logging.getLogger("emit.store").addHandler(failed)
    try:
        faults.set("write")
        with trio.fail_after(ANSWER_WITHIN):
            await failed.event.wait()  # the promotion of the due jobs failed
    finally:
        logging.getLogger("emit.store").removeHandler(failed)
    assert_unavailable(await create(server, {"name": "while-broken"}))
    faults.clear()
    after = await until_created(server)
    assert after["status"] == "pending"
