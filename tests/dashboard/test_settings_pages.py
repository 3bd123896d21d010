"""A space's settings page without a browser, against the HTTP tests' in-process server:
the form sets every setting, secrets are never shown back, a refused form changes
nothing and says why next to its field, and a post without the CSRF token does nothing."""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server

SECRET = "a-signing-secret-of-some-length"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def signed_in(server: Server) -> str:
    """Sign the client in; the settings page's CSRF token."""
    http = server.client
    token = csrf((await http.get("/signin")).text)
    answer = await http.post("/signin", data={"csrf": token, "key": ADMIN_KEY})
    assert answer.status_code == 302
    page = await http.get(f"/spaces/{server.space}/settings")
    assert page.status_code == 200
    return csrf(page.text)


FULL = {
    "retryBackoff.initialSeconds": "5",
    "retryBackoff.factor": "3",
    "retryBackoff.maxSeconds": "300",
    "retention.completed": "86400",
    "retention.dead": "0",
    "retention.killed": "",
    "signingSecret": SECRET,
    "rateLimit": "12.5",
    "pushUrl": "https://wake.example.com/emit",
    "pushHeaders": "Authorization: Bearer wake-token\nX-Team: ops",
    "pushNames": "video, email",
    "slackUrl": "https://hooks.slack.com/services/T0/B0/x",
}


async def test_the_form_sets_every_setting_and_shows_no_secret_back(server: Server) -> None:
    token = await signed_in(server)
    form = {**FULL, "csrf": token, "slackEvents": ["failed", "dead"]}
    answer = await server.client.post(f"/spaces/{server.space}/settings", data=form)
    assert answer.status_code == 302
    assert (await server.rt.get_space(server.space)).settings == {
        "retryBackoff": {"initialSeconds": 5, "factor": 3, "maxSeconds": 300},
        "retention": {"completed": 86400, "dead": 0},
        "signingSecret": SECRET,
        "rateLimit": 12.5,
        "pushUrl": "https://wake.example.com/emit",
        "pushHeaders": {"Authorization": "Bearer wake-token", "X-Team": "ops"},
        "pushNames": ["video", "email"],
        "slackUrl": "https://hooks.slack.com/services/T0/B0/x",
        "slackEvents": ["failed", "dead"],
    }
    page = (await server.client.get(answer.headers["location"])).text
    assert "Settings saved" in page and "is set" in page
    assert SECRET not in page and "wake-token" not in page and "ops" not in page
    assert "Authorization: ••••••" in page

    # Saved again as shown (secret blank, headers hidden): nothing changes; a header
    # line removed goes; a new value replaces.
    form = {**FULL, "csrf": token, "signingSecret": "", "slackEvents": ["failed"],
            "pushHeaders": "Authorization: ••••••"}  # fmt: skip
    await server.client.post(f"/spaces/{server.space}/settings", data=form)
    settings = (await server.rt.get_space(server.space)).settings
    assert settings["signingSecret"] == SECRET
    assert settings["pushHeaders"] == {"Authorization": "Bearer wake-token"}
    assert settings["slackEvents"] == ["failed"]

    # Blank fields remove their settings; the secret goes only when asked.
    form = {"csrf": token, "clearSigningSecret": "1"}
    await server.client.post(f"/spaces/{server.space}/settings", data=form)
    assert (await server.rt.get_space(server.space)).settings == {}


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("rateLimit", "fast", "rateLimit must be a number"),
        ("retention.dead", "-1", "retention.dead must be a whole number"),
        ("retryBackoff.factor", "0.5", "retryBackoff.factor"),
        ("signingSecret", "short", "signingSecret must be a string of 16"),
        ("pushUrl", "ftp://wake.example.com", "pushUrl must be an http(s) URL"),
        ("pushHeaders", "no colon here", "one header a line"),
        ("pushHeaders", "X-New: ••••••", "X-New is new"),
        ("slackUrl", "http://10.1.2.3/hook", "private address"),
    ],
)
async def test_a_refused_form_changes_nothing_and_says_why_by_its_field(
    server: Server, field: str, value: str, words: str
) -> None:
    await server.rt.update_space(server.space, {"rateLimit": 7})
    token = await signed_in(server)
    form = {"csrf": token, "rateLimit": "7", field: value, "slackEvents": ["dead"]}
    answer = await server.client.post(f"/spaces/{server.space}/settings", data=form)
    assert answer.status_code == 400
    error_id = "error-" + field.replace(".", "-")
    found = re.search(rf'<p class="error" id="{error_id}" role="alert">([^<]*)</p>', answer.text)
    assert found is not None and words in found.group(1), answer.text
    assert "Nothing was changed" in answer.text
    assert (await server.rt.get_space(server.space)).settings == {"rateLimit": 7}
    if field != "signingSecret":
        assert f'value="{value}"' in answer.text or value in answer.text  # kept to fix


async def test_slack_without_an_event_is_refused_by_the_events(server: Server) -> None:
    token = await signed_in(server)
    form = {"csrf": token, "slackUrl": "https://hooks.slack.com/services/T0/B0/x"}
    answer = await server.client.post(f"/spaces/{server.space}/settings", data=form)
    assert answer.status_code == 400 and 'id="error-slackEvents"' in answer.text
    assert (await server.rt.get_space(server.space)).settings == {}


async def test_a_post_without_the_csrf_token_or_a_session_does_nothing(server: Server) -> None:
    http = server.client
    answer = await http.post(f"/spaces/{server.space}/settings", data={"rateLimit": "1"})
    assert answer.status_code == 403
    answer = await http.get(f"/spaces/{server.space}/settings")
    assert answer.status_code == 302
    await signed_in(server)
    answer = await http.post(
        f"/spaces/{server.space}/settings", data={"csrf": "forged", "rateLimit": "1"}
    )
    assert answer.status_code == 403
    assert (await server.rt.get_space(server.space)).settings == {}


async def test_a_new_rate_limit_holds_at_once_for_keys_already_seen(tmp_path: Path) -> None:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=3600)
    async for server in start_server(tmp_path, settings):
        stats = f"/api/v1/spaces/{server.space}/stats"
        read = server.headers("producer")
        assert (await server.client.get(stats, headers=read)).status_code == 200  # cached
        token = await signed_in(server)
        form = {"csrf": token, "rateLimit": "0.001"}
        await server.client.post(f"/spaces/{server.space}/settings", data=form)
        answers = [(await server.client.get(stats, headers=read)).status_code for _ in "ab"]
        assert answers == [200, 429]
