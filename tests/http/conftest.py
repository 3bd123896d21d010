"""HTTP tests run a real Hypercorn server on a loopback port, over a real SQLite file,
and talk to it with httpx. Real time: sockets and SQLite threads do not mix with the
autojump clock; the tests wait on answers, never on the clock."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

import emit
from emit.http.settings import HttpSettings

ADMIN_KEY = "emit_admin_" + "t" * 43


@dataclass
class Server:
    rt: emit.Runtime
    client: httpx.AsyncClient
    url: str
    space: str
    other_space: str
    keys: dict[str, str]
    """producer, worker, public, admin, other (a worker key of the other space),
    revoked, unknown."""

    def headers(self, who: str) -> dict[str, str]:
        return {} if who == "none" else {"x-api-key": self.keys[who]}


async def start_server(tmp_path: Path, settings: HttpSettings) -> AsyncIterator[Server]:
    async with emit.open_runtime(tmp_path / "data") as rt:
        space = await rt.create_space("main")
        other = await rt.create_space("other")
        producer = await rt.create_token(space.id, name="p", scopes=["jobs:create", "jobs:read"])
        worker = await rt.create_token(space.id, name="w", preset="worker")
        killer = await rt.create_token(space.id, name="k", scopes=["jobs:kill", "jobs:read"])
        foreign = await rt.create_token(other.id, name="w", preset="worker")
        revoked = await rt.create_token(space.id, name="r", preset="worker")
        await rt.revoke_token(space.id, revoked.id)
        keys = {
            "producer": producer.key,
            "worker": worker.key,
            "killer": killer.key,
            "public": space.public_token,
            "admin": ADMIN_KEY,
            "other": foreign.key,
            "revoked": revoked.key,
            "unknown": "emit_" + "u" * 43,
        }
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(emit.serve, rt, port=0, settings=settings))
            async with httpx.AsyncClient(base_url=urls[0], timeout=30) as client:
                yield Server(rt, client, urls[0], space.id, other.id, keys)
            nursery.cancel_scope.cancel()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running
