"""``GET /metrics`` on a real server: the Prometheus text format, for the metrics token or
the admin key (as Prometheus's ``authorization`` setting sends it) and 401 for anyone
else; requests are counted under their route template, never their path."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio.testing import MockClock

import emit
from emit.http.app import create_app
from emit.http.settings import HttpSettings

from .conftest import ADMIN_KEY, Server, start_server

TOKEN = "metrics-" + "m" * 32
JOBS_ROUTE = "/api/v1/spaces/<space_id>/jobs"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(
        admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0, metrics_token=TOKEN
    )
    async for running in start_server(tmp_path, settings):
        yield running


async def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await server.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_the_token_and_the_admin_key_may_scrape_and_nobody_else(server: Server) -> None:
    with trio.fail_after(30):
        for headers in (
            {"Authorization": f"Bearer {TOKEN}"},
            {"Authorization": f"Bearer {ADMIN_KEY}"},
            {"x-api-key": ADMIN_KEY},
        ):
            response = await server.client.get("/metrics", headers=headers)
            assert response.status_code == 200, headers
            assert response.headers["content-type"].startswith("text/plain; version=")
            assert "# TYPE emit_jobs_created_total counter" in response.text
        for headers in (
            {},
            {"Authorization": "Bearer not-the-token"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {server.keys['producer']}"},  # a space's key
            server.headers("public"),
        ):
            response = await server.client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"


async def test_counts_move_with_jobs_and_requests(server: Server) -> None:
    space = server.space
    with trio.fail_after(30):
        before = await scrape(server)
        jobs = f"/api/v1/spaces/{space}/jobs"
        created = await server.client.post(
            jobs, json={"name": "counted"}, headers=server.headers("producer")
        )
        assert created.status_code == 201
        job_id = created.json()["id"]
        delivered = await server.client.post(
            f"/api/v1/jobs/{job_id}/claim", headers=server.headers("worker")
        )
        assert delivered.status_code == 200
        done = await server.client.post(
            f"/api/v1/jobs/{job_id}/complete",
            json={"result": 1, "leaseId": delivered.json()["leaseId"]},
            headers=server.headers("worker"),
        )
        assert done.status_code == 200
        assert (await server.client.get("/nowhere/" + job_id)).status_code == 404
        after = await scrape(server)

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("emit_jobs_created_total", space=space) == 1
    assert moved("emit_jobs_finished_total", space=space, status="completed") == 1
    assert after[("emit_jobs", frozenset({("space", space), ("status", "completed")}))] >= 1
    assert moved("emit_http_requests_total", route=JOBS_ROUTE, method="POST", status="201") == 1
    assert moved("emit_http_request_duration_seconds_count", route=JOBS_ROUTE) == 1
    complete_route = "/api/v1/jobs/<job_id>/complete"
    assert moved("emit_http_requests_total", route=complete_route, method="POST", status="200") == 1
    assert moved("emit_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert moved("emit_http_requests_total", route="/metrics", method="GET", status="200") == 1
    routes = {value for _, labels in after for name, value in labels if name == "route"}
    assert not [route for route in routes if space in route or job_id in route]  # templates
    commits = moved("emit_store_commit_seconds_count")
    assert commits >= 3


async def test_a_lease_expiry_shows_in_the_scrape(autojump_clock: MockClock) -> None:
    """On the autojump clock, through the app itself (Quart's test client, the in-memory
    store: no socket, no thread), a lease that runs out is counted by kind."""
    settings = HttpSettings(admin_key=ADMIN_KEY, metrics_token=TOKEN)
    with trio.fail_after(60):
        async with emit.open_runtime(None) as rt:
            space = (await rt.create_space("s")).id
            jobs = rt.space(space)
            job = await jobs.create("slow", timeout_seconds=5)
            await jobs.claim(job.id)  # and never acked
            await trio.sleep(6)
            await jobs.settled()
            client = create_app(rt, settings).test_client()
            response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            text = await response.get_data(as_text=True)
    expiries = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "emit_lease_expiries_total" and sample.labels["space"] == space
    }
    assert expiries == {"ack": 1, "run": 0}
