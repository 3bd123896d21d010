"""The home page's chart, renaming a space and the keys' last use, as pages, without a
browser, against the HTTP tests' in-process server (signed in as a browser would)."""

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from emit.dashboard.charts import HALF, finish_chart
from emit.http.settings import HttpSettings
from emit.throughput import Minute

from ..http.conftest import ADMIN_KEY, Server, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def sign_in(http: httpx.AsyncClient) -> str:
    """Sign ``http`` in; the session's CSRF token."""
    form = await http.get("/signin")
    answer = await http.post("/signin", data={"key": ADMIN_KEY, "csrf": csrf(form.text)})
    assert answer.status_code == 302
    return csrf((await http.get("/")).text)


async def test_the_home_page_charts_each_spaces_finishes(server: Server) -> None:
    with trio.fail_after(30):
        jobs = server.rt.space(server.space)
        for name in ("a", "b", "c"):
            job = await jobs.create(name, max_retries=0)
            await jobs.claim(job.id)
            await jobs.ack(job.id)
            if name == "c":
                await jobs.fail(job.id, "boom")
            else:
                await jobs.complete(job.id)
        await sign_in(server.client)
        page = (await server.client.get("/")).text
        main = page[page.index(f'id="finishes-{server.space}"') :]
        main = main[: main.index("</figure>")]
        assert '2 completed</span> · <span class="dead">1 dead' in main
        assert main.count('<rect class="completed"') in (1, 2)  # a minute may turn between
        assert main.count('<rect class="dead"') == 1
        assert 'role="img"' in main
        summary = html.unescape(re.sub(r"<[^>]+>", "", main.split('id="finishes-')[-1]))
        assert "In the last hour, 2 completed and 1 dead" in summary
        other = page[page.index(f'id="finishes-{server.other_space}"') :]
        other = other[: other.index("</figure>")]
        assert "<rect" not in other and "No job completed or died in the last hour." in other


async def test_a_space_is_renamed_from_its_page(server: Server) -> None:
    with trio.fail_after(30):
        http = server.client
        token = await sign_in(http)
        path = f"/spaces/{server.space}"
        renamed = await http.post(f"{path}/rename", data={"name": " emails ", "csrf": token})
        assert renamed.status_code == 302 and renamed.headers["location"] == path
        assert (await server.rt.get_space(server.space)).name == "emails"
        assert "<h1>emails</h1>" in (await http.get(path)).text
        refused = await http.post(f"{path}/rename", data={"name": "x" * 201, "csrf": token})
        assert refused.status_code == 400
        assert "name must be a string of 1 to 200 characters" in refused.text
        forged = await http.post(f"{path}/rename", data={"name": "forged", "csrf": "x"})
        assert forged.status_code == 403
        assert (await server.rt.get_space(server.space)).name == "emails"


async def test_the_tokens_table_shows_each_keys_last_use(server: Server) -> None:
    with trio.fail_after(30):
        http = server.client
        await sign_in(http)
        stats = f"/api/v1/spaces/{server.space}/stats"
        assert (await http.get(stats, headers=server.headers("worker"))).status_code == 200
        page = (await http.get(f"/spaces/{server.space}")).text
        rows = {
            re.search(r"<strong>([^<]+)</strong>", row).group(1): row  # type: ignore[union-attr]
            for row in page.split("<tr")[1:]
            if "<strong>" in row
        }
        used = re.search(r'class="when last-used">([^<]+)<', rows["w"])
        assert used is not None and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", used.group(1))
        assert 'class="when last-used">never<' in rows["k"]


def test_the_charts_bars_share_one_scale() -> None:
    start = 1_800_000_000.0
    minutes = [Minute(start + 60 * m, 0, 0) for m in range(60)]
    minutes[10] = Minute(start + 600, 8, 0)
    minutes[59] = Minute(start + 3540, 2, 1)
    chart = finish_chart(minutes)
    assert (chart.completed, chart.dead, chart.width) == (10, 1, 240)
    tall, short, dead = chart.bars
    assert (tall.x, tall.y, tall.height) == (40, 0, HALF)  # the peak fills its half
    assert (short.x, short.height, short.y + short.height) == (236, 6, HALF)
    assert (dead.kind, dead.y, dead.height) == ("dead", HALF + 1, 3)
    assert dead.label == "08:59 UTC: 1 dead"
    assert "the busiest minute, 08:10 UTC, had 8 completed and 0 dead" in chart.summary
