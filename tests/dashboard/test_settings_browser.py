"""A space's Settings page in a real headless Chromium against a real `emit serve`: each
setting set through the page and read back over the API, a bad value refused with its
message beside its field, and a Slack URL whose job completion arrives at a local
receiver as a Slack message. Screenshots at 1280 and 390 px go to tests/artifacts/."""

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ..cli.test_cli import Served
from .test_browser import browser, shoot, sign_in  # noqa: F401 (the browser fixture)

with contextlib.suppress(ImportError):  # without it, the browser fixture skips
    from playwright.sync_api import Browser, expect

SECRET = "a-signing-secret-of-some-length"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(
        tmp_path / "data",
        "--key-cache-seconds", "0",
        "--log-level", "warning",
        "--allow-private-callbacks",  # the Slack receiver is on loopback
    )  # fmt: skip
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture
def slack() -> Iterator[tuple[str, "queue.Queue[dict[str, str]]"]]:
    """A stand-in for Slack's incoming webhook on loopback: every body it gets, in order."""
    arrived: queue.Queue[dict[str, str]] = queue.Queue()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            arrived.put(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/services/T0/B0/x", arrived
    server.shutdown()
    server.server_close()


def test_every_setting_through_the_page_and_slack_hears_of_a_completion(
    browser: "Browser",  # noqa: F811
    served: Served,
    slack: tuple[str, "queue.Queue[dict[str, str]]"],
) -> None:
    slack_url, arrived = slack
    space = served.value("space id")
    admin = {"x-api-key": served.value("admin key")}
    api = httpx.Client(base_url=served.url, timeout=30)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, served)
    page.get_by_role("link", name="default").click()
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    expect(page.get_by_text("No signing secret is set")).to_be_visible()
    shoot(page, "settings")

    page.get_by_label("Initial wait (seconds)").fill("5")
    page.get_by_label("Factor").fill("3")
    page.get_by_label("Longest wait (seconds)").fill("300")
    page.get_by_label("Completed", exact=True).fill("86400")
    page.get_by_label("Dead", exact=True).fill("0")
    page.get_by_label("New secret").fill(SECRET)
    page.get_by_label("Requests a second, for each key").fill("50")
    page.get_by_label("Push URL").fill("https://wake.example.com/emit")
    page.get_by_label("Headers").fill("Authorization: Bearer wake-token")
    page.get_by_label("Only for these job names").fill("video, send-email")
    page.get_by_label("Incoming-webhook URL").fill(slack_url)
    events = page.locator("input[name=slackEvents]")
    for event in ("dead", "killed"):  # of the default outcomes, keep completed only
        events.and_(page.locator(f"[value={event}]")).uncheck()
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_have_text("Settings saved.")

    settings = api.get(f"/api/v1/spaces/{space}", headers=admin).json()["settings"]
    assert settings == {
        "retryBackoff": {"initialSeconds": 5, "factor": 3, "maxSeconds": 300},
        "retention": {"completed": 86400, "dead": 0},
        "signingSecret": SECRET,
        "rateLimit": 50,
        "pushUrl": "https://wake.example.com/emit",
        "pushHeaders": {"Authorization": "Bearer wake-token"},
        "pushNames": ["video", "send-email"],
        "slackUrl": slack_url,
        "slackEvents": ["completed"],
    }
    # Read back on the page: the secret and the header's value never shown.
    expect(page.get_by_text("A signing secret is set")).to_be_visible()
    expect(page.get_by_label("Headers")).to_have_value("Authorization: ••••••")
    expect(page.get_by_label("Requests a second, for each key")).to_have_value("50")
    assert SECRET not in page.content() and "wake-token" not in page.content()
    shoot(page, "settings-saved")

    # A bad value: refused with its message next to its field; nothing changed.
    page.get_by_label("Requests a second, for each key").fill("fast")
    page.get_by_label("Longest wait (seconds)").fill("301")
    page.get_by_role("button", name="Save settings").click()
    field = page.get_by_label("Requests a second, for each key")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-rateLimit")).to_contain_text("rateLimit must be a number")
    shoot(page, "settings-refused")
    assert api.get(f"/api/v1/spaces/{space}", headers=admin).json()["settings"] == settings

    # Slack hears of a job's completion (and not of its creation: not chosen).
    producer = {"x-api-key": served.value("producer key")}
    worker = {"x-api-key": served.value("worker key")}
    job = api.post(f"/api/v1/spaces/{space}/jobs", json={"name": "send-email"}, headers=producer)
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    polled = api.post(f"/api/v1/spaces/{space}/jobs/poll", json={}, headers=worker).json()
    assert [j["id"] for j in polled["jobs"]] == [job_id]
    done = api.post(f"/api/v1/jobs/{job_id}/complete", json={"result": 1}, headers=worker)
    assert done.status_code == 200, done.text
    message = arrived.get(timeout=15)
    assert message == {"text": f"[default] Job send-email ({job_id}) completed"}
    assert arrived.empty()
    context.close()
