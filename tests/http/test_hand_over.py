"""A poll answered for a client that hangs up before the answer is sent in full gives
its jobs back: they are pending again at once, with their attempt unspent, instead of
waiting out a lease nobody holds.

The app is driven through ASGI directly, as Hypercorn drives it, with the in-memory
store on the autojump clock: the hang-up comes exactly while the answer goes out, after
the handler returned (the case the handler itself cannot see)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
from trio.testing import MockClock

import emit
from emit.http.app import create_app
from emit.http.settings import HttpSettings

from .conftest import Server


@pytest.fixture
async def rt(autojump_clock: MockClock) -> AsyncIterator[emit.Runtime]:
    async with emit.open_runtime(None) as runtime:
        yield runtime


def _scope(path: str, key: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"emit.test"),
            (b"x-api-key", key.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8787),
        "extensions": {},
    }


async def _poll_and_hang_up(
    rt: emit.Runtime, space_id: str, key: str, *, hang_up_at: str
) -> list[str]:
    """POST a poll; the client hangs up when the server sends ``hang_up_at`` (the
    answer's start, or its body). What the server managed to send, by event type."""
    app = create_app(rt, HttpSettings(admin_key="emit_admin_" + "t" * 43))
    body = orjson.dumps({"count": 1, "ack": True})
    hung_up = trio.Event()
    sent: list[str] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == hang_up_at:
            hung_up.set()
            await trio.sleep_forever()  # the socket is gone: this write never finishes
        sent.append(message["type"])

    with trio.fail_after(30):
        await app(_scope(f"/api/v1/spaces/{space_id}/jobs/poll", key, body), receive, send)  # type: ignore[arg-type]
    return sent


@pytest.mark.parametrize("hang_up_at", ["http.response.start", "http.response.body"])
async def test_a_poll_whose_answer_is_not_sent_in_full_gives_its_job_back(
    rt: emit.Runtime, hang_up_at: str
) -> None:
    space = await rt.create_space("s")
    worker = await rt.create_token(space.id, name="w", preset="worker")
    jobs = rt.space(space.id)
    job = await jobs.create("j", timeout_seconds=60)
    sent = await _poll_and_hang_up(rt, space.id, worker.key, hang_up_at=hang_up_at)
    assert "http.response.body" not in sent
    with trio.fail_after(5):
        await jobs.settled()
        view = await jobs.get(job.id)
    assert view.status == "pending", "the job waits out a lease nobody holds"
    assert view.attempt_number == 0
    assert view.events is not None and view.events[-1].data == {"reason": "caller_gone"}
    # And a worker that does listen gets it at once, not a lease timeout later.
    start = trio.current_time()
    [delivery] = await jobs.poll()
    assert delivery.id == job.id and trio.current_time() - start < 1


async def test_a_poll_answer_sent_in_full_keeps_its_lease(rt: emit.Runtime) -> None:
    space = await rt.create_space("s")
    worker = await rt.create_token(space.id, name="w", preset="worker")
    jobs = rt.space(space.id)
    job = await jobs.create("j", timeout_seconds=60)
    sent = await _poll_and_hang_up(rt, space.id, worker.key, hang_up_at="never")
    assert sent[-1] == "http.response.body"
    await jobs.settled()
    assert (await jobs.get(job.id)).status == "running"


async def test_polls_answered_over_a_real_connection_keep_their_leases(server: Server) -> None:
    """Hypercorn hands the request its disconnect while the answer's closing send is
    still in progress: that must not count as a hang-up once every byte went out."""
    worker, producer = server.headers("worker"), server.headers("producer")
    for n in range(20):
        made = await server.client.post(
            f"/api/v1/spaces/{server.space}/jobs", json={"name": f"j{n}"}, headers=producer
        )
        assert made.status_code == 201
        polled = await server.client.post(
            f"/api/v1/spaces/{server.space}/jobs/poll", json={"ack": True}, headers=worker
        )
        [job] = polled.json()["jobs"]
        done = await server.client.post(f"/api/v1/jobs/{job['id']}/complete", headers=worker)
        assert done.status_code == 200, f"poll {n}: {done.text}"
