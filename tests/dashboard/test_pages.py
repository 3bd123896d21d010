"""The dashboard's pages without a browser, against the HTTP tests' in-process server:
the public token's snippet is the one docs/realtime.md documents, and the pages need a
session."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server

REALTIME_DOC = Path(__file__).parents[2] / "docs" / "realtime.md"
SNIPPET = Path(__file__).parents[2] / "emit" / "dashboard" / "templates" / "snippet.txt"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


def _words(text: str) -> list[str]:
    return text.split()


def test_the_dashboards_snippet_is_the_documented_one() -> None:
    [documented] = re.findall(r"```html\n(.*?)```", REALTIME_DOC.read_text(), re.S)[:1]
    served = SNIPPET.read_text()
    served = served.replace("{{ origin }}", "https://emit.example.com")
    served = served.replace("{{ public_token }}", "emit_pub_…")
    assert _words(served) == _words(documented)


async def test_every_page_needs_a_session(server: Server) -> None:
    http = server.client
    for path in ("/", f"/spaces/{server.space}", f"/spaces/{server.space}/tokens/new"):
        answer = await http.get(path, headers=server.headers("admin"))  # a key is no session
        assert answer.status_code == 302, path
        assert answer.headers["location"] == f"/signin?next={path}"
    for path in ("/spaces", f"/spaces/{server.space}/delete", "/signout"):
        answer = await http.post(path, data={"name": "x"})
        assert answer.status_code == 403, path
        assert "Sign in first" in answer.text
    assert [s.name for s in await server.rt.list_spaces()] == ["main", "other"]


async def test_the_signin_page_never_shows_the_admin_key(server: Server) -> None:
    page = await server.client.get("/signin")
    assert page.status_code == 200
    assert ADMIN_KEY not in page.text
    assert page.headers["cache-control"] == "no-store"
