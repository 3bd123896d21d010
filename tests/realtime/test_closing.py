"""How streams end: a client that closes on the final event (as a browser page does)
races the server's own close and must still see 1000 with nothing logged; a client
that stops reading is dropped and its socket freed within a bounded time; bad query
values get the documented answer, never a 500. Real server, real clients."""

import logging
import os
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url
from wsproto.events import CloseConnection

import emit
from emit.http.settings import HttpSettings
from emit.realtime import streams

from .test_streams import Live, receive, until_closed

SEND_TIMEOUT = 0.5


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with emit.open_runtime(tmp_path / "data") as rt:
        space = await rt.create_space("s")
        other = await rt.create_space("o")
        reader = await rt.create_token(space.id, name="r", scopes=["jobs:read"])
        worker = await rt.create_token(space.id, name="w", preset="worker")
        foreign = await rt.create_token(other.id, name="r", scopes=["jobs:read"])
        async with trio.open_nursery() as nursery:
            settings = HttpSettings(key_cache_seconds=0, send_timeout=SEND_TIMEOUT)
            urls = await nursery.start(partial(emit.serve, rt, port=0, settings=settings))
            yield Live(
                rt, rt.space(space.id), urls[0].replace("http://", "ws://"), space.id,
                space.public_token, reader.key, worker.key, foreign.key,
            )  # fmt: skip
            nursery.cancel_scope.cancel()


@pytest.fixture
def close_frames(monkeypatch: pytest.MonkeyPatch) -> dict[WebSocketConnection, int]:
    """The code of the close frame each client received from the server (trio-websocket
    reports its own code when it closed first, so the frame is read where it arrives)."""
    received: dict[WebSocketConnection, int] = {}
    handle = WebSocketConnection._handle_close_connection_event

    async def recording(self: WebSocketConnection, event: CloseConnection) -> None:
        received[self] = event.code
        await handle(self, event)

    monkeypatch.setattr(WebSocketConnection, "_handle_close_connection_event", recording)
    return received


@pytest.mark.parametrize("read_first", [True, False], ids=["read", "in-flight"])
@pytest.mark.parametrize("code", [1000, None], ids=["1000", "no-status"])
async def test_a_client_closing_on_the_final_event_always_sees_1000(
    live: Live,
    close_frames: dict[WebSocketConnection, int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    code: int | None,
    read_first: bool,
) -> None:
    """The browser snippet closes when it sees ``completed``; on a busy server its close
    frame arrives before the server's own close (held back here until the client's close
    is on its way, as a loaded event loop does): the client must still get 1000, whether
    it closed with 1000 or, as a browser's ``ws.close()`` does, with no status at all,
    and the server must log nothing. ``read_first``: the server has read the client's
    close before its own close starts; else its own close and the client's cross."""
    caplog.set_level(logging.WARNING)
    close = streams._close
    client_closing = trio.Event()

    async def late_close(code: int) -> None:
        if code == 1000:
            await client_closing.wait()
        await close(code)

    monkeypatch.setattr(streams, "_close", late_close)
    seen = []
    for _ in range(30):
        client_closing = trio.Event()
        job = await live.jobs.create("j")
        await live.jobs.claim(job.id)
        url = f"{live.ws}/api/v1/realtime/{job.id}?token={live.public}"
        with trio.fail_after(10):
            async with open_websocket_url(url) as ws:
                assert (await receive(ws))["type"] == "init"
                await live.jobs.complete(job.id, {"ok": True})
                assert (await receive(ws))["type"] == "completed"
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ws.aclose, code)  # type: ignore[arg-type]  # None: no status
                    if read_first:
                        await trio.testing.wait_all_tasks_blocked()
                    else:
                        for _ in range(2):
                            await trio.lowlevel.checkpoint()  # the client's frame is sent
                    client_closing.set()
        seen.append(close_frames.get(ws, 1006))  # no close frame from the server: 1006
    assert seen == [1000] * 30
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def server_sockets(port: int) -> int:
    """Sockets the server holds on its port (the kernel's table: a socket the server has
    closed has no inode any more, whatever state its TCP close is in)."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in rows.readlines()[1:]:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                listening = fields[3] == "0A"
                if local_port == port and not listening and int(fields[9]) != 0:
                    held += 1
    return held


async def never_reading_stream(live: Live, path: str) -> trio.SocketStream:
    """A WebSocket client that reads the handshake answer, then nothing ever again."""
    host, port = live.ws.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\n"
        "connection: Upgrade\r\nsec-websocket-version: 13\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(1)
    assert received.startswith(b"HTTP/1.1 101")
    return stream


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
async def test_a_client_that_never_reads_is_dropped_and_its_socket_freed(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that stop reading are cut off (1013) once their queue is full; the close
    frame itself cannot be written to them either, so the server gives the write
    ``send_timeout`` seconds and then drops the connection: no socket is held for
    good, whatever the client does."""
    live.rt.hub.queue_size, live.rt.hub.queue_bytes = 8, 64 * 1024
    job = await live.jobs.create("big")
    await live.jobs.claim(job.id)
    await live.jobs.ack(job.id)
    port = int(live.ws.rsplit(":", 1)[1])
    path = f"/api/v1/realtime/{job.id}?token={live.reader}"
    hub, ended, all_ended = live.rt.hub, [], trio.Event()
    unsubscribe = hub.unsubscribe

    def counting(subscription: Any) -> None:  # a stream's handler has finished
        unsubscribe(subscription)
        ended.append(subscription)
        if len(ended) == 10:
            all_ended.set()

    monkeypatch.setattr(hub, "unsubscribe", counting)
    clients = [await never_reading_stream(live, path) for _ in range(10)]
    try:
        assert server_sockets(port) == 10
        with trio.fail_after(60):
            feeds = live.rt.hub._feeds[live.space].jobs[job.id]
            while any(sub.close_code is None for sub in feeds):
                await live.jobs.progress(job.id, 1, "x" * 40_000)  # far more than buffers hold
        assert {sub.close_code for sub in feeds} == {1013}
        with trio.fail_after(SEND_TIMEOUT + 5):  # the bug: stuck in a write for good
            await all_ended.wait()
        assert server_sockets(port) == 0
    finally:
        for client in clients:
            await client.aclose()


@pytest.mark.parametrize(
    ("query", "missed"),
    [
        ("since=%C2%B2", False),  # "²": a digit to str.isdigit, not a number
        ("since=%D9%A3", False),  # "٣", an Arabic-Indic three
        ("since=-1", False),
        ("since=1.5", False),
        ("since=", False),
        ("since=" + "9" * 5000, True),  # above any seq: missed
        ("since=" + "9" * 5000 + "&streamInstanceId=x", True),
        ("since=1&streamInstanceId=" + "%FF" * 100, True),  # not this run's instance
        ("since=0&since=x", True),  # the first one counts; no instance given: missed
        ("streamInstanceId=%00", False),
    ],
)
async def test_bad_space_stream_query_values_get_the_documented_answer(
    live: Live, query: str, missed: bool
) -> None:
    """realtime.md: a ``since`` that is not a number is as if absent; one above the
    latest seq, or with another instance, is ``missed``. Never a 500."""
    url = f"{live.ws}/api/v1/realtime/spaces/{live.space}?token={live.reader}&{query}"
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            connected = await receive(ws)
    assert connected["type"] == "connected"
    assert connected["missed"] is missed


@pytest.mark.parametrize("token", ["%FF%FE", "%00", "x" * 5000, "%C2%B2"])
async def test_bad_tokens_close_with_4401(live: Live, token: str) -> None:
    job = await live.jobs.create("j")
    for path in (job.id, f"spaces/{live.space}"):
        with trio.fail_after(10):
            async with open_websocket_url(f"{live.ws}/api/v1/realtime/{path}?token={token}") as ws:
                assert await until_closed(ws) == ([], 4401)
