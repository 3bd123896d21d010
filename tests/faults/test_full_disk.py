"""A real full disk: the data directory on a small tmpfs, filled through the API. Clients
get 503 (not a hang, not a 500), readiness says why, earlier jobs stay intact, and once
space is freed the same running server takes writes again. Needs to mount a tmpfs (CI
runs as root); skipped, saying why, where that is not allowed."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server

ANSWER_WITHIN = 10.0
PAYLOAD = {"blob": "x" * 32_000}


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
async def small_disk_server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    with tmpfs(tmp_path / "mnt", "8m") as mnt:
        async for running in start_server(mnt, settings):
            yield running


async def create(server: Server, payload: Any = None) -> httpx.Response:
    with trio.fail_after(ANSWER_WITHIN):
        return await server.client.post(
            f"/api/v1/spaces/{server.space}/jobs",
            json={"name": "fill", "payload": payload},
            headers=server.headers("producer"),
        )


async def ready(server: Server) -> httpx.Response:
    with trio.fail_after(ANSWER_WITHIN):
        return await server.client.get("/readyz")


async def test_a_full_disk_is_a_503_and_the_server_recovers_once_space_is_freed(
    small_disk_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server = small_disk_server
    mnt = Path(server.rt.store.path).parent.parent  # type: ignore[attr-defined]
    earlier = []
    for _ in range(3):
        made = await create(server, PAYLOAD)
        assert made.status_code == 201
        earlier.append(made.json())
    # Leave about 1 MiB free, then fill that through the API.
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * max(0, free - (1 << 20)))

    for _ in range(200):
        response = await create(server, PAYLOAD)
        if response.status_code != 201:
            break
    else:
        raise AssertionError("the disk never filled")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "unavailable"
    refused = await create(server, PAYLOAD)  # and again: still a clear answer
    assert refused.status_code == 503, refused.text

    not_ready = await ready(server)
    assert not_ready.status_code == 503 and "disk is full" in not_ready.text
    assert any("disk is full" in r.message and r.levelno >= logging.ERROR for r in caplog.records)
    for job in earlier:  # intact, and readable while the disk is full
        read = await server.client.get(
            f"/api/v1/jobs/{job['id']}", headers=server.headers("producer")
        )
        assert read.status_code == 200 and read.json()["payload"] == PAYLOAD

    filler.unlink()  # space again, on the same running server
    assert (await ready(server)).status_code == 200
    for _ in range(2):  # at most once "restarting" from the last failure
        after = await create(server, PAYLOAD)
        if after.status_code == 201:
            break
        assert after.status_code == 503 and "restarting" in after.text
    assert after.status_code == 201, after.text
    assert (await create(server, PAYLOAD)).status_code == 201
