"""How streams end: a client that closes on the final event (as a browser page does)
races the server's own close and must still see 1000 with nothing logged; a client
that stops reading is dropped and its socket freed within a bounded time; bad query
values get the documented answer, never a 500. Real server, real clients."""

import logging
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url
from wsproto.events import CloseConnection

import emit
from emit.http.settings import HttpSettings
from emit.realtime import streams

from .test_streams import Live, receive

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
