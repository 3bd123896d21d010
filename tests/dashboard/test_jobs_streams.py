"""The dashboard's own streams and JSON routes, against a real server with real WebSocket
clients: the space stream is the API's, message for message (replay and ``missed``
included); the job stream's ``init`` carries the history and it stays open after a final
event; nothing opens without a session, or from another origin."""

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


Headers = list[tuple[bytes, bytes]]


async def signed_in(server: Server) -> Headers:
    """The headers of a browser signed in to the dashboard of ``server``."""
    form = await server.client.get("/signin")
    [csrf] = re.findall(r'name="csrf" value="([^"]+)"', form.text)
    done = await server.client.post("/signin", data={"csrf": csrf, "key": ADMIN_KEY})
    assert done.status_code == 302
    cookie = server.client.cookies["emit_session"]
    return [(b"Cookie", f"emit_session={cookie}".encode()), (b"Origin", server.url.encode())]


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def close_code(server: Server, path: str, headers: Headers) -> int:
    async with open_websocket_url(ws_url(server, path), extra_headers=headers) as ws:
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return closed.reason.code
    raise AssertionError("not closed")


async def test_the_space_stream_is_the_apis(server: Server) -> None:
    browser = await signed_in(server)
    jobs = server.rt.space(server.space)
    api = ws_url(server, f"/api/v1/realtime/spaces/{server.space}?token={server.keys['producer']}")
    with trio.fail_after(10):
        async with (
            open_websocket_url(api) as theirs,
            open_websocket_url(
                ws_url(server, f"/spaces/{server.space}/jobs/live"), extra_headers=browser
            ) as ours,
        ):
            hello_api, hello = await receive(theirs), await receive(ours)
            assert hello == hello_api
            job = await jobs.create("report")
            await jobs.kill(job.id, "not needed")
            for _ in range(2):
                assert await ours.get_message() == await theirs.get_message()
        instance = hello["streamInstanceId"]
        # A reconnect: replayed from the buffer, or told it missed what it asked for
        path = f"/spaces/{server.space}/jobs/live?since={hello['seq'] + 1}"
        async with open_websocket_url(
            ws_url(server, f"{path}&streamInstanceId={instance}"), extra_headers=browser
        ) as ws:
            again = await receive(ws)
            assert again["missed"] is False
            assert (await receive(ws))["type"] == "killed"
        async with open_websocket_url(
            ws_url(server, f"{path}&streamInstanceId=another"), extra_headers=browser
        ) as ws:
            assert (await receive(ws))["missed"] is True


async def test_the_job_stream_shows_the_history_and_outlives_the_end(server: Server) -> None:
    browser = await signed_in(server)
    jobs = server.rt.space(server.space)
    job = await jobs.create("resize", max_retries=0)
    await jobs.claim(job.id)
    await jobs.ack(job.id)
    with trio.fail_after(10):
        path = f"/spaces/{server.space}/jobs/{job.id}/live"
        async with open_websocket_url(ws_url(server, path), extra_headers=browser) as ws:
            init = await receive(ws)
            assert init["status"] == "running"
            assert [e["type"] for e in init["events"]] == ["created", "delivered", "started"]
            assert init["outcome"] == {}
            await jobs.log(job.id, "warn", "slow disk")
            await jobs.fail(job.id, "disk full")
            logged, dead = await receive(ws), await receive(ws)
            assert logged["data"]["message"] == "slow disk"
            assert (dead["type"], dead["data"]) == ("dead", {"error": "disk full"})
            await jobs.retry(job.id)  # after the final event, still open
            retried = await receive(ws)
            assert (retried["type"], retried["status"]) == ("retried", "pending")
        await jobs.kill(job.id, "enough")
        async with open_websocket_url(ws_url(server, path), extra_headers=browser) as ws:
            init = await receive(ws)
            assert init["status"] == "killed"
            assert init["outcome"] == {"reason": "enough"}


async def test_the_streams_need_a_session_and_the_dashboards_origin(server: Server) -> None:
    browser = await signed_in(server)
    job = await server.rt.space(server.space).create("x")
    space_path = f"/spaces/{server.space}/jobs/live"
    job_path = f"/spaces/{server.space}/jobs/{job.id}/live"
    elsewhere = [browser[0], (b"Origin", b"https://evil.example")]
    with trio.fail_after(10):
        for path in (space_path, job_path):
            assert await close_code(server, path, [(b"Origin", server.url.encode())]) == 4401
            assert await close_code(server, path, elsewhere) == 4403
            assert await close_code(server, path, browser[:1]) == 4403  # no Origin at all
        assert (
            await close_code(server, "/spaces/01M8ZZZZZZZZZZZZZZZZZZZZZZ/jobs/live", browser)
            == 4404
        )
        other_job = f"/spaces/{server.other_space}/jobs/{job.id}/live"
        assert await close_code(server, other_job, browser) == 4404


async def test_the_json_routes_need_a_session(server: Server) -> None:
    job = await server.rt.space(server.space).create("x")
    rows = f"/spaces/{server.space}/jobs.json"
    logs = f"/spaces/{server.space}/jobs/{job.id}/logs.json"
    for path in (rows, logs):
        assert (await server.client.get(path)).status_code == 401
    await signed_in(server)
    listed = (await server.client.get(rows, params={"status": "pending"})).json()
    assert listed["total"] == 1 and [r["id"] for r in listed["jobs"]] == [job.id]
    assert (await server.client.get(rows, params={"status": "nope"})).status_code == 400
    assert (await server.client.get(logs)).json() == {"logs": []}
