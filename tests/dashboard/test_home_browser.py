"""The home page's chart, renaming a space and the keys' last use, in a real headless
Chromium against a real `emit serve` (the fixtures of test_browser.py): jobs complete and
die over the API, and the pages show it. Screenshots at 1280 and 390 px wide go to
tests/artifacts/."""

import re

import httpx

from ..cli.test_cli import Served
from .test_browser import ARTIFACTS, browser, served, shoot, sign_in

try:
    from playwright.sync_api import Browser, expect
except ImportError:  # pragma: no cover - the `browser` fixture then skips (fails under CI)
    expect = None  # type: ignore[assignment]

__all__ = ["browser", "served"]  # the fixtures this module uses


def test_the_home_chart_renaming_and_last_use_in_the_browser(
    browser: "Browser", served: Served
) -> None:
    space = served.value("space id")
    producer = {"x-api-key": served.value("producer key")}
    worker = {"x-api-key": served.value("worker key")}
    with httpx.Client(base_url=served.url, timeout=30) as api:
        made = api.post(
            f"/api/v1/spaces/{space}/jobs",
            json=[{"name": f"job-{n}", "maxRetries": 0} for n in range(5)],
            headers=producer,
        )
        assert made.status_code == 201, made.text
        polled = api.post(
            f"/api/v1/spaces/{space}/jobs/poll", json={"count": 5, "ack": True}, headers=worker
        ).json()["jobs"]
        assert len(polled) == 5
        for job in polled[:3]:
            done = api.post(f"/api/v1/jobs/{job['id']}/complete", json={}, headers=worker)
            assert done.status_code == 200, done.text
        for job in polled[3:]:
            died = api.post(f"/api/v1/jobs/{job['id']}/fail", json={"error": "x"}, headers=worker)
            assert died.json()["status"] == "dead"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, served)

    # The chart: this hour's three completions and two deaths, in words for a reader too
    chart = page.locator(f"#finishes-{space}")
    expect(chart.locator("figcaption")).to_contain_text("3 completed · 2 dead")
    expect(page.get_by_role("img", name=re.compile("3 completed and 2 dead"))).to_be_visible()
    assert chart.locator("rect.completed").count() in (1, 2)  # a minute may turn between
    assert chart.locator("rect.dead").count() in (1, 2)
    shoot(page, "home-chart")
    page.locator("table.spaces").screenshot(path=str(ARTIFACTS / "dashboard-home-chart-row.png"))

    # The keys' last use: the producer and the worker were used, nothing else
    page.get_by_role("link", name="default").click()
    rows = page.locator("table.tokens tbody tr")
    for name in ("producer", "worker"):
        used = rows.filter(has_text=name).locator("td.last-used")
        expect(used).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    shoot(page, "space-last-used")

    # Rename: the page, the home page and the API all say the new name
    page.get_by_label("New name").fill("emails")
    page.get_by_role("button", name="Rename space").click()
    expect(page.get_by_role("heading", name="emails", exact=True)).to_be_visible()
    page.get_by_label("New name").fill("   ")
    page.get_by_role("button", name="Rename space").click()
    expect(page.get_by_role("alert")).to_contain_text("name must be a string of 1 to 200")
    page.get_by_role("link", name="Back").click()
    expect(page.get_by_role("heading", name="emails", exact=True)).to_be_visible()
    page.get_by_role("link", name="Spaces", exact=True).first.click()
    expect(page.get_by_role("link", name="emails")).to_be_visible()
    admin = {"x-api-key": served.value("admin key")}
    listed = httpx.get(f"{served.url}/api/v1/spaces/{space}", headers=admin, timeout=30)
    assert listed.json()["name"] == "emails"
    context.close()
