"""Webhooks to real HTTP receivers on loopback (Hypercorn serving a tiny ASGI app), from a
runtime on a real SQLite file: delivery with a verifiable signature, retry after a 500,
resumption after a restart, and a hung receiver that delays nobody else. Real time with
short backoff; the tests wait on arrivals, not on the clock."""

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

import emit
from emit.callbacks.policy import CallbackPolicy

FAST = CallbackPolicy(first_delay=0.05, factor=2, tries=5, timeout=2)


@dataclass
class Hook:
    """Records what arrives; answers each path with its scripted statuses, then 200."""

    script: dict[str, list[int | str]] = field(default_factory=dict)
    arrivals: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.arrivals.append((path, headers, body))
        self.changed.set()
        self.changed = trio.Event()
        plan = self.script.get(path, [])
        action = plan.pop(0) if plan else 200
        if action == "hang":
            await trio.sleep_forever()
        await send({"type": "http.response.start", "status": action, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def wait_for(self, path: str, count: int) -> None:
        with trio.fail_after(30):
            while sum(1 for p, _, _ in self.arrivals if p == path) < count:
                await self.changed.wait()


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    receiver = Hook()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, receiver, config))  # type: ignore[arg-type]
        yield receiver, urls[0]
        nursery.cancel_scope.cancel()


async def settle_events(jobs: emit.SpaceJobs, job_id: str, count: int) -> list[Any]:
    for _ in range(1000):
        events = [e for e in (await jobs.get(job_id)).events or () if e.type.startswith("callback")]
        if len(events) >= count:
            return events
        await trio.sleep(0.01)
    raise AssertionError("the callback was not recorded")


async def test_a_real_receiver_gets_a_signed_callback(
    tmp_path: Path, hook: tuple[Hook, str]
) -> None:
    receiver, base = hook
    async with emit.open_runtime(
        tmp_path, allow_private_callbacks=True, callback_policy=FAST
    ) as rt:
        space = await rt.create_space("s")
        await rt.update_space(space.id, {"signingSecret": "secret-" * 4})
        jobs = rt.space(space.id)
        job = await jobs.create("j", callback_url=f"{base}/done", callback_headers={"X-Tag": "7"})
        await jobs.claim(job.id)
        await jobs.complete(job.id, {"ok": 1})
        await receiver.wait_for("/done", 1)
        [(_, headers, body)] = receiver.arrivals
        assert json.loads(body)["result"] == {"ok": 1} and headers["x-tag"] == "7"
        t, v1 = (p.split("=", 1)[1] for p in headers["emit-signature"].split(","))
        mac = hmac.new(b"secret-" * 4, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mac, v1)
        [sent] = await settle_events(jobs, job.id, 1)
        assert sent.type == "callback_sent" and sent.data["statusCode"] == 200


async def test_a_500_is_retried(tmp_path: Path, hook: tuple[Hook, str]) -> None:
    receiver, base = hook
    receiver.script["/flaky"] = [500, 500]
    async with emit.open_runtime(
        tmp_path, allow_private_callbacks=True, callback_policy=FAST
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j", callback_url=f"{base}/flaky")
        await jobs.kill(job.id)
        await receiver.wait_for("/flaky", 3)
        events = await settle_events(jobs, job.id, 3)
        assert [e.type for e in events] == ["callback_failed", "callback_failed", "callback_sent"]


async def test_a_pending_callback_survives_a_restart(
    tmp_path: Path, hook: tuple[Hook, str]
) -> None:
    receiver, base = hook
    receiver.script["/later"] = [503]
    slow = CallbackPolicy(first_delay=3600, tries=5)  # the retry would be an hour away
    async with emit.open_runtime(
        tmp_path, allow_private_callbacks=True, callback_policy=slow
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        job = await jobs.create("j", callback_url=f"{base}/later")
        await jobs.kill(job.id)
        await receiver.wait_for("/later", 1)
        await settle_events(jobs, job.id, 1)
    # Back later than the retry was due (an hour, plus its jitter): the outbox still
    # holds it, and it is delivered at once.
    async with emit.open_runtime(
        tmp_path, allow_private_callbacks=True, callback_policy=slow, start_time=time.time() + 5000
    ) as rt:
        jobs = rt.space(job.space_id)
        await receiver.wait_for("/later", 2)
        events = await settle_events(jobs, job.id, 2)
        assert [e.type for e in events] == ["callback_failed", "callback_sent"]


async def test_a_hung_receiver_delays_no_other_callback(
    tmp_path: Path, hook: tuple[Hook, str]
) -> None:
    receiver, base = hook
    receiver.script["/hung"] = ["hang"]
    policy = CallbackPolicy(first_delay=0.05, tries=2, timeout=20)
    async with emit.open_runtime(
        tmp_path, allow_private_callbacks=True, callback_policy=policy
    ) as rt:
        jobs = rt.space((await rt.create_space("s")).id)
        stuck = await jobs.create("a", callback_url=f"{base}/hung")
        await jobs.kill(stuck.id)
        await receiver.wait_for("/hung", 1)
        start = trio.current_time()
        fine = await jobs.create("b", callback_url=f"{base}/fine")
        await jobs.kill(fine.id)
        await receiver.wait_for("/fine", 1)
        assert trio.current_time() - start < 5  # long before the hung one times out
        [sent] = await settle_events(jobs, fine.id, 1)
        assert sent.type == "callback_sent"
