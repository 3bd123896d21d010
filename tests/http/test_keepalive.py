"""Keep-alive connections after an early answer: a request refused before its body was
read (401, 403, 404, 429) must leave the connection able to carry the next request, or
close it, even when the body comes in a later TCP segment (as requests/urllib3 send
it). Raw sockets against a real server, so the segments are ours to place."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from emit.http.settings import HttpSettings

from .conftest import ADMIN_KEY, Server, start_server


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1, max_body=4096, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


async def read_response(stream: trio.SocketStream, buffered: bytearray) -> tuple[int, bool]:
    """One response off the connection: its status, and whether it said it closes."""
    while b"\r\n\r\n" not in buffered:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buffered))
        buffered += data
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buffered))
        rest += data
    buffered[:] = rest[length:]
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"


async def early_answer_then_next_request(server: Server, key: str, path: str) -> int:
    """Send a request's headers, take the early answer, send its body in a later
    segment, then a second request on the same connection. Its status, or 0 if the
    server closed the connection instead (after saying so in its answer)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = b'{"name": "j"}'
    buffered = bytearray()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        )
        status, closing = await read_response(stream, buffered)
        assert status in (401, 403, 404, 405, 413, 429)
        try:
            await stream.send_all(body)
            await stream.send_all(f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
            return (await read_response(stream, buffered))[0]
        except (EOFError, trio.BrokenResourceError):
            assert closing, "closed without saying so"
            return 0


async def early_answer_then_eof(server: Server, key: str, path: str, length: int) -> int:
    """Send only a request's headers (announcing a body), take the early answer, and
    wait for the server to close the connection. The answer's status."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    buffered = bytearray()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n".encode()
        )
        status, closing = await read_response(stream, buffered)
        assert closing, "an answer before the body was read must close the connection"
        while await stream.receive_some(65536):
            pass  # the bug: the server never closes it, and holds the socket for good
    return status


REFUSALS = [
    ("unknown", "jobs", 401),
    ("public", "jobs", 403),  # no jobs:create
    ("other", "jobs", 403),  # another space's key
    ("producer", "missing", 404),  # no such route
    ("producer", "stats", 405),  # a GET route
]


def refusal_path(server: Server, where: str) -> str:
    return {
        "jobs": f"/api/v1/spaces/{server.space}/jobs",
        "missing": "/api/v1/nowhere",
        "stats": f"/api/v1/spaces/{server.space}/stats",
    }[where]


@pytest.mark.parametrize(("who", "where", "status"), REFUSALS)
async def test_an_early_refusal_closes_the_connection(
    server: Server, who: str, where: str, status: int
) -> None:
    with trio.fail_after(10):
        assert (
            await early_answer_then_eof(server, server.keys[who], refusal_path(server, where), 20)
            == status
        )


@pytest.mark.parametrize(("who", "where", "status"), REFUSALS)
async def test_a_body_after_an_early_refusal_never_hangs_the_next_request(
    server: Server, who: str, where: str, status: int
) -> None:
    for _ in range(5):
        with trio.fail_after(10):  # the bug: the second request never gets an answer
            answer = await early_answer_then_next_request(
                server, server.keys[who], refusal_path(server, where)
            )
        assert answer in (0, 200)


async def test_a_body_over_the_limit_closes_the_connection(limited: Server) -> None:
    """413 is answered from the headers alone (Content-Length over the limit)."""
    path = refusal_path(limited, "jobs")
    with trio.fail_after(10):
        assert await early_answer_then_eof(limited, limited.keys["producer"], path, 5000) == 413


async def test_a_rate_limited_request_closes_the_connection_or_serves_the_next(
    limited: Server,
) -> None:
    path = refusal_path(limited, "jobs")
    headers = limited.headers("producer")
    while (await limited.client.post(path, json={"name": "j"}, headers=headers)).status_code != 429:
        pass
    with trio.fail_after(10):
        assert await early_answer_then_eof(limited, limited.keys["producer"], path, 20) == 429
        status = await early_answer_then_next_request(limited, limited.keys["producer"], path)
    assert status in (0, 200)
