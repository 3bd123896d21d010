"""The jobs table and a job's page in a real headless Chromium, against a real
`emit serve`: a job submitted over the API appears in the table without a reload, a
worker's progress moves its bar and its completion shows, live; kill, retry and the bulk
actions from the pages; the event timeline (the webhook's tries included) and the logs
with their level filter. The test waits on the page's state (Playwright's expect), never
on a fixed time. Screenshots of each page at 1280 and 390 px go to tests/artifacts/."""

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..cli.test_cli import Served
from . import test_browser
from .test_browser import shoot, sign_in

try:
    from playwright.sync_api import Browser, Page, WebSocketRoute, expect
except ImportError:  # pragma: no cover - the test extras install it
    expect = None  # type: ignore[assignment]

browser = test_browser.browser  # the same fixture: Chromium, or a skip with the reason


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(
        tmp_path / "data",
        *("--key-cache-seconds", "0", "--log-level", "warning", "--allow-private-callbacks"),
    )
    yield server
    if server.proc.poll() is None:
        server.stop()


class Api:
    """The producer's and the worker's side, over plain HTTP."""

    def __init__(self, served: Served) -> None:
        self.http = httpx.Client(base_url=served.url, timeout=30)
        self.space = served.value("space id")
        self.producer = {"x-api-key": served.value("producer key")}
        self.worker = {"x-api-key": served.value("worker key")}

    def create(self, name: str, **fields: Any) -> str:
        made = self.http.post(
            f"/api/v1/spaces/{self.space}/jobs",
            json={"name": name, "payload": {"image": "cat.png"}, **fields},
            headers=self.producer,
        )
        assert made.status_code == 201, made.text
        job_id: str = made.json()["id"]
        return job_id

    def take(self, name: str) -> str:
        polled = self.http.post(
            f"/api/v1/spaces/{self.space}/jobs/poll", json={"name": name}, headers=self.worker
        )
        [job] = polled.json()["jobs"]
        lease: str = job["leaseId"]
        return lease

    def worker_post(self, job_id: str, action: str, body: Any) -> None:
        answer = self.http.post(f"/api/v1/jobs/{job_id}/{action}", json=body, headers=self.worker)
        assert answer.status_code in (200, 202), answer.text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def open_page(browser: "Browser", served: Served) -> "Page":
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, served)
    return page


def test_a_job_live_in_the_table_and_on_its_page(browser: "Browser", served: Served) -> None:
    api = Api(served)
    page = open_page(browser, served)
    page.get_by_role("link", name="default").click()
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("live")

    # Submitted over the API: the row appears without a reload
    hook = f"http://127.0.0.1:{closed_port()}/hook"
    job_id = api.create(
        "resize", callbackUrl=hook, callbackHeaders={"Authorization": "Bearer s3cret"}
    )
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("pending")
    lease = api.take("resize")
    expect(row.locator(".badge")).to_have_text("delivered")
    api.worker_post(job_id, "ack", {"leaseId": lease})
    expect(row.locator(".badge")).to_have_text("running")
    api.worker_post(job_id, "progress", {"leaseId": lease, "percent": 10, "message": "start"})
    expect(row.locator("progress")).to_have_js_property("value", 10)
    shoot(page, "jobs")

    # The job's page: progress with its sub-progress, logs, then completion, all live
    row.get_by_role("link", name="resize").click()
    expect(page.get_by_role("heading", name="resize")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#job-status")).to_have_text("running")
    assert "s3cret" not in page.content()
    expect(page.get_by_text("Authorization: [redacted]")).to_be_visible()
    api.worker_post(
        job_id,
        "progress",
        {"leaseId": lease, "percent": 40, "message": "resizing",
         "subProgress": {"download": {"percent": 100}, "resize": {"percent": 20}}},
    )  # fmt: skip
    expect(page.get_by_label("Job progress")).to_have_js_property("value", 40)
    expect(page.locator("#progress .msg").first).to_have_text("resizing")
    expect(page.get_by_label("Progress of resize")).to_have_js_property("value", 20)
    expect(page.get_by_label("Progress of download")).to_have_js_property("value", 100)
    api.worker_post(
        job_id,
        "logs",
        [{"level": "debug", "message": "opened cat.png"},
         {"level": "warn", "message": "slow disk", "fields": {"ms": 900}}],
    )  # fmt: skip
    logs = page.locator("#logs li")
    expect(logs).to_have_text([re.compile("debug opened cat.png"), re.compile("warn slow disk")])
    api.worker_post(job_id, "complete", {"leaseId": lease, "result": {"width": 640}})
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#outcome-result")).to_contain_text('"width": 640')
    expect(page.get_by_role("button", name="Kill job")).to_be_hidden()
    events = page.locator("#events li .type")
    expect(events.first).to_have_text("created")
    expect(page.locator("#events li.event-completed")).to_have_count(1)
    # The webhook's tries are on the timeline too (its receiver is not there)
    expect(page.locator("#events li.event-callback_failed").first).to_be_visible()
    shoot(page, "job")

    # The level filter: warn and above
    page.get_by_label("Level at least").select_option("warn")
    page.get_by_role("button", name="Show").click()
    expect(logs).to_have_count(1)
    expect(logs.first).to_contain_text("slow disk")
    page.get_by_role("link", name="Jobs").click()
    expect(page.locator(f'tr[data-job-id="{job_id}"] .badge')).to_have_text("completed")
    page.context.close()


def test_kill_retry_and_the_bulk_actions(browser: "Browser", served: Served) -> None:
    api = Api(served)
    page = open_page(browser, served)
    page.on("dialog", lambda dialog: dialog.accept())

    # Kill a pending job from its page, then retry it
    job_id = api.create("thumbnail")
    page.goto(f"{served.url}/spaces/{api.space}/jobs/{job_id}")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.get_by_role("button", name="Retry job")).to_be_hidden()
    page.get_by_role("button", name="Kill job").click()
    expect(page.locator("#job-status")).to_have_text("killed")
    expect(page.locator("#outcome-reason")).to_contain_text("killed from the dashboard")
    shoot(page, "job-killed")
    page.get_by_role("button", name="Retry job").click()
    expect(page.locator("#job-status")).to_have_text("pending")
    expect(page.locator("#events li.event-retried")).to_have_count(1)

    # Two jobs die (no retries left): retried together from the table
    dead = [api.create("upload", maxRetries=0) for _ in range(2)]
    for job in dead:
        api.take("upload")
        api.worker_post(job, "fail", {"error": "disk full"})
    page.goto(f"{served.url}/spaces/{api.space}/jobs/{dead[0]}")
    expect(page.locator("#outcome-error")).to_contain_text("disk full")
    page.goto(f"{served.url}/spaces/{api.space}/jobs")
    page.get_by_label("Status").select_option("dead")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#job-rows tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#live-state")).to_have_text("live")
    shoot(page, "jobs-dead")
    page.get_by_label("Select all on this page").check()
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_role("status").filter(has_text="Retried")).to_have_text(
        "Retried 2 of 2 jobs."
    )
    expect(rows).to_have_count(0)
    shoot(page, "jobs-retried")

    # Kill every pending job at once
    page.get_by_label("Status").select_option("pending")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(3)
    page.get_by_label("Select all on this page").check()
    page.get_by_role("button", name="Kill selected").click()
    expect(page.get_by_role("status").filter(has_text="Killed")).to_have_text("Killed 3 of 3 jobs.")
    counts = api.http.get(f"/api/v1/spaces/{api.space}/stats", headers=api.producer).json()
    assert counts["counts"]["killed"] == 3
    page.context.close()


def test_after_a_gap_the_table_reads_itself_again(browser: "Browser", served: Served) -> None:
    """The page's socket is routed through the test: the first connection goes quiet (what
    happens meanwhile is lost) and drops; the second says ``missed``, as a server that
    restarted would. The table then re-reads itself."""
    api = Api(served)
    job_id = api.create("report")
    page = open_page(browser, served)
    sockets: list[WebSocketRoute] = []
    quiet = threading.Event()

    def route(ws: "WebSocketRoute") -> None:
        sockets.append(ws)
        if len(sockets) == 1:
            server = ws.connect_to_server()
            server.on_message(lambda message: None if quiet.is_set() else ws.send(message))
        else:
            hello = {"type": "connected", "seq": 0, "streamInstanceId": "restarted",
                     "missed": True, "counts": {}}  # fmt: skip
            ws.send(json.dumps(hello))

    page.route_web_socket(re.compile(r"/jobs/live"), route)
    page.goto(f"{served.url}/spaces/{api.space}/jobs")
    badge = page.locator(f'tr[data-job-id="{job_id}"] .badge')
    expect(badge).to_have_text("pending")
    expect(page.locator("#live-state")).to_have_text("live")
    quiet.set()  # from now on, nothing reaches the page
    api.take("report")
    sockets[0].close(code=1001)
    expect(badge).to_have_text("delivered")
    assert "since=" in sockets[1].url and "streamInstanceId=" in sockets[1].url
    page.context.close()


def test_the_jobs_pages_and_streams_need_a_session(browser: "Browser", served: Served) -> None:
    api = Api(served)
    job_id = api.create("secret-work")
    base = f"/spaces/{api.space}/jobs"
    with httpx.Client(base_url=served.url, timeout=30) as outsider:
        for path in (base, f"{base}/{job_id}"):
            assert outsider.get(path).status_code == 302
        for path in (f"{base}.json", f"{base}/{job_id}/logs.json"):
            assert outsider.get(path).status_code == 401
        for path in (f"{base}/bulk", f"{base}/{job_id}/kill", f"{base}/{job_id}/retry"):
            assert outsider.post(path, data={"ids": job_id, "action": "kill"}).status_code == 403

    context = browser.new_context()
    page = context.new_page()
    page.goto(served.url + "/signin")
    closes = """url => new Promise(done => {
        const ws = new WebSocket(url);
        ws.onmessage = () => done("message");
        ws.onclose = (event) => done(event.code);
    })"""
    ws = served.url.replace("http", "ws", 1)
    assert page.evaluate(closes, f"{ws}{base}/live") == 4401
    assert page.evaluate(closes, f"{ws}{base}/{job_id}/live") == 4401
    sign_in(page, served)
    # Signed in, a forged post (no CSRF token) kills nothing
    forged = page.request.post(f"{served.url}{base}/{job_id}/kill", form={"csrf": "x"})
    assert forged.status == 403
    job = api.http.get(f"/api/v1/jobs/{job_id}", headers=api.producer).json()
    assert job["status"] == "pending"
    context.close()
