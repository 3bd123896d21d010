"""An idle keep-alive connection, the one every HTTP client keeps open between its
requests, is closed by the server when it shuts down: a stop does not wait out its
grace period for clients that are not asking anything."""

from functools import partial
from pathlib import Path

import trio

import emit
from emit.http.server import serve
from emit.http.settings import HttpSettings

from .conftest import ADMIN_KEY


async def test_a_shutdown_closes_idle_keepalive_connections_at_once(tmp_path: Path) -> None:
    settings = HttpSettings(admin_key=ADMIN_KEY, key_cache_seconds=0)
    shutdown = trio.Event()
    with trio.fail_after(10):  # the grace period is 60 s: only a prompt close passes
        async with emit.open_runtime(tmp_path / "data") as rt, trio.open_nursery() as nursery:
            urls = await nursery.start(
                partial(
                    serve,
                    rt,
                    port=0,
                    settings=settings,
                    shutdown_trigger=shutdown.wait,
                    graceful_timeout=60,
                )
            )
            host, port = urls[0].removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive_some(65536)
                assert answer.startswith(b"HTTP/1.1 200")
                shutdown.set()
                while data := await stream.receive_some(65536):
                    answer += data  # the rest of the body, then the server's close
