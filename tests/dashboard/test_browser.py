"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; nothing
downloads a browser), against a real `emit serve` in a subprocess: the seed's steps 1
and 2 (a space, its tokens, the public token), and what a signed-out browser or a forged
form gets. Skipped where there is no Chromium, except under CI, where that fails.
Screenshots of each page, at 1280 and 390 px wide, go to tests/artifacts/."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..cli.test_cli import Served

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
WIDTHS = {"wide": 1280, "narrow": 390}

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    if BROWSER is None or sync_playwright is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the dashboard's browser tests: install chromium")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "data", "--key-cache-seconds", "0", "--log-level", "warning")
    yield server
    if server.proc.poll() is None:
        server.stop()


def shoot(page: "Page", name: str) -> None:
    """A screenshot of the page at each width, for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def sign_in(page: "Page", served: Served) -> None:
    page.goto(served.url + "/")
    expect(page).to_have_url(served.url + "/signin?next=/")
    page.get_by_label("Admin key").fill(served.value("admin key"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Spaces", exact=True)).to_be_visible()


def test_the_seed_steps_one_and_two_in_the_browser(browser: "Browser", served: Served) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.url)
    page = context.new_page()
    page.set_default_timeout(15_000)

    page.goto(served.url + "/")
    shoot(page, "signin")
    page.get_by_label("Admin key").fill("emit_admin_not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the admin key.")
    sign_in(page, served)
    expect(page.get_by_role("link", name="default")).to_be_visible()  # the first start's
    shoot(page, "home")

    # Step 1: Spaces → Create Space
    page.get_by_label("Name").fill("email-jobs")
    page.get_by_role("button", name="Create space").click()
    expect(page.get_by_role("heading", name="email-jobs")).to_be_visible()
    space_id = page.locator("#space-id").inner_text()
    assert len(space_id) == 26

    # Step 2: Tokens → Create Token, a producer's by scopes, a worker's by preset
    page.get_by_label("Name", exact=True).fill("producer")
    page.get_by_label("jobs:create", exact=True).check()
    page.get_by_label("jobs:read", exact=True).check()
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("alert")).to_contain_text("it will not be shown again")
    shoot(page, "token-made")
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    producer_key = page.evaluate("navigator.clipboard.readText()")
    assert producer_key == page.locator("#new-key").inner_text()
    assert producer_key.startswith("emit_")
    page.reload()  # shown once: a reload neither shows it again nor makes another key
    expect(page.get_by_role("heading", name="email-jobs")).to_be_visible()
    expect(page.locator("#new-key")).to_have_count(0)

    page.get_by_label("Name", exact=True).fill("worker")
    page.get_by_label("The Worker preset").check()
    page.get_by_role("button", name="Create token").click()
    worker_key = page.locator("#new-key").inner_text()
    page.get_by_role("link", name="Back to email-jobs").click()
    rows = page.locator("table.tokens tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("jobs:create jobs:read")

    # The public token, with the browser snippet filled in for this space
    public = page.locator("#public-token").inner_text()
    assert public.startswith("emit_pub_")
    snippet = page.locator("#snippet").inner_text()
    assert f'const EMIT = "{served.url}";' in snippet
    assert f'const PUBLIC_TOKEN = "{public}";' in snippet
    shoot(page, "space")

    # The keys work over the API
    api = httpx.Client(base_url=served.url, timeout=30)
    created = api.post(
        f"/api/v1/spaces/{space_id}/jobs",
        json={"name": "send-email", "payload": {"to": "a@b.c"}},
        headers={"x-api-key": producer_key},
    )
    assert created.status_code == 201, created.text
    polled = api.post(
        f"/api/v1/spaces/{space_id}/jobs/poll", json={}, headers={"x-api-key": worker_key}
    )
    assert [job["id"] for job in polled.json()["jobs"]] == [created.json()["id"]]

    # Revoke: the key stops working at once
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke producer").click()
    expect(rows.nth(0)).to_contain_text("revoked")
    refused = api.get(f"/api/v1/jobs/{created.json()['id']}", headers={"x-api-key": producer_key})
    assert refused.status_code == 401

    # Delete, confirmed by the space's name
    page.get_by_label("Type email-jobs to confirm").fill("email")
    page.get_by_role("button", name="Delete space").click()
    expect(page.get_by_role("alert")).to_contain_text("Type the space's name")
    page.get_by_role("link", name="Back").click()
    page.get_by_label("Type email-jobs to confirm").fill("email-jobs")
    page.get_by_role("button", name="Delete space").click()
    expect(page.get_by_role("heading", name="Spaces", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="email-jobs")).to_have_count(0)

    # Sign out: back to the sign-in page, and the pages are closed again
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(served.url + "/spaces/" + space_id)
    expect(page).to_have_url(f"{served.url}/signin?next=/spaces/{space_id}")
    context.close()


def test_signed_out_browsers_and_forged_forms_get_nothing(
    browser: "Browser", served: Served
) -> None:
    admin = served.value("admin key")
    space = served.value("space id")
    with httpx.Client(base_url=served.url, timeout=30) as outsider:
        for path in ("/", f"/spaces/{space}"):
            answer = outsider.get(path)
            assert answer.status_code == 302 and answer.headers["location"].startswith("/signin")
        forged = outsider.post("/spaces", data={"name": "forged", "csrf": "x"})
        assert forged.status_code == 403
        # The sign-in form itself needs the CSRF token of the session that loaded it.
        assert outsider.post("/signin", data={"key": admin}).status_code == 403

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, served)
    cookie = next(c for c in context.cookies() if c["name"] == "emit_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert admin not in page.content()
    # Signed in, but a post without the page's CSRF token (as another site would make it)
    forged_in = page.request.post(served.url + "/spaces", form={"name": "forged", "csrf": "x"})
    assert forged_in.status == 403
    listed = httpx.get(
        served.url + "/api/v1/spaces", headers={"x-api-key": admin}, timeout=30
    ).json()
    assert [space["name"] for space in listed] == ["default"]
    context.close()
