"""The browser snippet of docs/realtime.md, as written (base URL, token and job id
aside), in a real headless Chromium: it opens the job stream with the public token,
shows progress with data.percent, then "Done". Chromium is driven over the DevTools
protocol with trio-websocket; the test waits on promises in the page, never on time.

Chromium comes from Debian's package (.ci/run installs it). Without it the test is
skipped, except under CI, where a missing browser is a failure."""

import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

import emit
from emit.http.settings import HttpSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "realtime.md"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

# Record the page's WebSockets without touching the snippet: resolves once the stream
# has said anything (init), so the test knows the page is watching.
INSTRUMENT = """
(() => {
  const Real = window.WebSocket;
  let opened;
  window.__emitInit = new Promise((resolve) => { opened = resolve; });
  window.WebSocket = function (url, protocols) {
    const ws = new Real(url, protocols);
    ws.addEventListener("message", () => opened(true));
    return ws;
  };
})();
"""

WATCH_LABELS = """
window.__emitInit.then(() => {
  const label = document.getElementById("label");
  window.__labels = [];
  new MutationObserver(() => window.__labels.push(label.textContent))
    .observe(label, {childList: true, characterData: true, subtree: true});
  return true;
})
"""

UNTIL_DONE = """
new Promise((resolve) => {
  const label = document.getElementById("label");
  const check = () => {
    if (label.textContent === "Done") {
      resolve({labels: window.__labels, bar: document.getElementById("bar").value});
    }
  };
  new MutationObserver(check).observe(label, {childList: true, characterData: true, subtree: true});
  check();
})
"""


def snippet() -> str:
    blocks = re.findall(r"```html\n(.*?)```", DOC.read_text(), re.S)
    assert blocks, "docs/realtime.md has no browser snippet"
    return str(blocks[0])


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run should have installed it")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    process = subprocess.Popen(
        [
            BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--remote-debugging-port=0", "about:blank",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None
    try:
        for line in process.stderr:
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                yield found.group(1)
                break
        else:
            pytest.fail("Chromium did not start its DevTools endpoint")
    finally:
        process.kill()
        process.wait()


class DevTools:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.ids = count(1)

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        ident = next(self.ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_message(json.dumps(message))
        while True:
            answer = json.loads(await self.ws.get_message())
            if answer.get("id") == ident:
                assert "error" not in answer, answer
                return answer["result"]

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", session, expression=expression, awaitPromise=True,
            returnByValue=True,
        )  # fmt: skip
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[emit.Runtime, str]]:
    async with emit.open_runtime(tmp_path / "data") as rt, trio.open_nursery() as nursery:
        serve = partial(emit.serve, rt, port=0, settings=HttpSettings())
        urls = await nursery.start(serve)
        yield rt, urls[0]
        nursery.cancel_scope.cancel()


async def test_the_browser_snippet_shows_progress_then_done(
    chromium: str, server: tuple[emit.Runtime, str], tmp_path: Path
) -> None:
    rt, base = server
    space = await rt.create_space("web")
    jobs = rt.space(space.id)
    job = await jobs.create("thumbnail")
    page = snippet()
    page = page.replace('"https://emit.example.com"', json.dumps(base))
    page = page.replace('"emit_pub_…"', json.dumps(space.public_token))
    page = re.sub(r'watchJob\("[0-9A-Z]{26}"\)', f'watchJob("{job.id}")', page)
    html = tmp_path / "watch.html"
    html.write_text(f"<!doctype html><meta charset=utf-8><body>{page}</body>")

    with trio.fail_after(60):
        async with open_websocket_url(chromium) as ws:
            tools = DevTools(ws)
            target = await tools.call("Target.createTarget", url="about:blank")
            attached = await tools.call(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            session = attached["sessionId"]
            await tools.call("Page.enable", session)
            await tools.call("Page.addScriptToEvaluateOnNewDocument", session, source=INSTRUMENT)
            await tools.call("Page.navigate", session, url=html.as_uri())
            assert await tools.evaluate(session, WATCH_LABELS) is True  # the page watches
            await jobs.claim(job.id)
            await jobs.ack(job.id)
            await jobs.progress(job.id, 50, "half way")
            await jobs.complete(job.id, {"url": "private"})
            seen = await tools.evaluate(session, UNTIL_DONE)
    assert "50% \u2013 half way" in seen["labels"]  # the snippet writes an en dash
    assert seen["labels"][-1] == "Done" and seen["bar"] == 100
