"""A key's last use over HTTP: each request notes it, the token list shows it as
``lastUsedAt`` at once, and no request writes to the store for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from emit.http.settings import HttpSettings
from emit.isotime import parse_iso

from .conftest import ADMIN_KEY, Server, start_server


@pytest.fixture(params=[0, 60], ids=["uncached", "cached"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=request.param)
    async for running in start_server(tmp_path, settings):
        yield running


def commits(server: Server) -> float:
    text = server.rt.metrics_text().decode()
    [line] = [x for x in text.splitlines() if x.startswith("emit_store_commit_seconds_count")]
    return float(line.split()[-1])


async def test_each_use_is_noted_and_listed_without_a_write(server: Server) -> None:
    with trio.fail_after(30):
        http = server.client
        tokens = f"/api/v1/spaces/{server.space}/tokens"
        before = await http.get(tokens, headers=server.headers("admin"))
        assert {t["name"]: t["lastUsedAt"] for t in before.json() if not t["public"]} == {
            "p": None, "w": None, "k": None, "r": None,
        }  # fmt: skip
        written = commits(server)
        started = server.rt.clock.now()
        for _ in range(20):
            answer = await http.get(
                f"/api/v1/spaces/{server.space}/stats", headers=server.headers("producer")
            )
            assert answer.status_code == 200
        assert commits(server) == written  # reads, and no write for their keys' uses
        listed = (await http.get(tokens, headers=server.headers("admin"))).json()
        used = {t["name"]: t["lastUsedAt"] for t in listed}
        assert used["w"] is None and used["k"] is None
        assert parse_iso(used["p"]) >= started - 0.001
        # Written by the next flush, in one commit
        assert await server.rt.flush_key_uses() == 1
        assert commits(server) == written + 1
        [stored] = [t for t in await server.rt.store.list_tokens(server.space) if t.name == "p"]
        assert stored.last_used_at is not None
        assert abs(stored.last_used_at - parse_iso(used["p"])) < 0.001  # ms on the wire
