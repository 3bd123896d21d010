"""What a job's callback settings can and cannot do to a running server, over a real
server on loopback and a real receiver: header values never reach readers, private
targets are refused when the job is made, bad headers are refused with a 400, and no
callback (whatever its headers, even a row written before validation existed) stops the
callback sender or the server. Real time: the tests wait on answers and arrivals."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

import emit
from emit.callbacks.policy import CallbackPolicy
from emit.domain.records import Callback
from emit.http.settings import HttpSettings
from emit.store.records import Changes

from .conftest import ADMIN_KEY

FAST = CallbackPolicy(first_delay=0.05, factor=2, tries=3, timeout=2)
SECRET = "Bearer whsec_0123456789abcdef"


@dataclass
class Receiver:
    """A real HTTP receiver: records each request's raw headers and answers 204."""

    arrivals: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        self.arrivals.append(list(scope["headers"]))
        self.changed.set()
        self.changed = trio.Event()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@dataclass
class Running:
    rt: emit.Runtime
    client: httpx.AsyncClient
    space: str
    producer: str
    worker: str
    hook: str
    receiver: Receiver

    def jobs(self, tail: str = "") -> str:
        return f"/api/v1/spaces/{self.space}/jobs{tail}"

    @staticmethod
    def job(job_id: str, tail: str = "") -> str:
        return f"/api/v1/jobs/{job_id}{tail}"

    async def create(self, **fields: Any) -> httpx.Response:
        body = {"name": "j", **fields}
        return await self.client.post(self.jobs(), json=body, headers={"x-api-key": self.producer})

    async def get(self, job_id: str, key: str) -> dict[str, Any]:
        response = await self.client.get(self.job(job_id), headers={"x-api-key": key})
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    async def finish(self, job_id: str) -> None:
        worker = {"x-api-key": self.worker}
        claimed = await self.client.post(self.job(job_id, "/claim"), headers=worker)
        assert claimed.status_code == 200, claimed.text
        done = await self.client.post(
            self.job(job_id, "/complete"), json={"result": 1}, headers=worker
        )
        assert done.status_code == 200, done.text

    async def callback_events(self, job_id: str) -> list[dict[str, Any]]:
        """Wait for the job's callback to be sent or given up; its callback events."""
        for _ in range(1000):
            events = [e for e in (await self.get(job_id, self.producer))["events"]]
            mine = [e for e in events if e["type"].startswith("callback")]
            if mine and (mine[-1]["type"] == "callback_sent" or not mine[-1]["data"]["willRetry"]):
                return mine
            await trio.sleep(0.01)
        raise AssertionError("the callback was neither sent nor given up")

    async def still_serving(self) -> None:
        assert (await self.client.get("/readyz")).status_code == 200
        made = await self.create()
        assert made.status_code == 201, made.text


@asynccontextmanager
async def running(data: Path, *, allow_private: bool) -> AsyncIterator[Running]:
    receiver = Receiver()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async with (
        trio.open_nursery() as nursery,
        emit.open_runtime(data, allow_private_callbacks=allow_private, callback_policy=FAST) as rt,
    ):
        [hook] = await nursery.start(partial(hypercorn_serve, receiver, config))  # type: ignore[arg-type]
        spaces = await rt.list_spaces()
        space = spaces[0] if spaces else await rt.create_space("main")
        producer = await rt.create_token(space.id, name="p", scopes=["jobs:create", "jobs:read"])
        worker = await rt.create_token(space.id, name="w", preset="worker")
        [url] = await nursery.start(partial(emit.serve, rt, port=0, settings=settings))
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Running(rt, client, space.id, producer.key, worker.key, f"{hook}/hook", receiver)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Running]:
    """A server that delivers to private addresses (the receiver is on loopback)."""
    async with running(tmp_path / "data", allow_private=True) as server:
        yield server


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Running]:
    """A server with the default policy: private targets refused."""
    async with running(tmp_path / "data", allow_private=False) as server:
        yield server


def refused(response: httpx.Response, field: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    message: str = error["message"]
    assert error["code"] == "invalid_request" and message.startswith(field), message
    return message


# ------------------------------------------------------------------ header values


async def test_readers_see_callback_header_names_but_never_their_values(
    server: Running,
) -> None:
    with trio.fail_after(30):
        headers = {"Authorization": SECRET, "X-Tag": "7"}
        made = await server.create(callbackUrl=server.hook, callbackHeaders=headers)
        assert made.status_code == 201
        job_id = made.json()["id"]
        assert SECRET not in made.text
        for key in (server.worker, server.producer):
            job = await server.get(job_id, key)
            assert set(job["callbackHeaders"]) == {"Authorization", "X-Tag"}
            assert SECRET not in str(job) and "7" not in job["callbackHeaders"].values()
        listed = await server.client.get(server.jobs(), headers={"x-api-key": server.worker})
        assert listed.status_code == 200 and SECRET not in listed.text
        [polled] = (
            await server.client.post(server.jobs("/poll"), headers={"x-api-key": server.worker})
        ).json()["jobs"]
        assert SECRET not in str(polled)
        await server.client.post(
            server.job(job_id, "/complete"), json={}, headers={"x-api-key": server.worker}
        )
        [sent] = await server.callback_events(job_id)
        assert sent["type"] == "callback_sent" and SECRET not in str(sent)
        # Only the sender had the value.
        [arrived] = server.receiver.arrivals
        assert (b"authorization", SECRET.encode()) in arrived


# --------------------------------------------------------------- private targets


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://LOCALHOST.:8080/hook",
        "http://api.localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "https://192.168.0.7/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_a_private_callback_url_is_refused_when_the_job_is_made(
    guarded: Running, url: str
) -> None:
    with trio.fail_after(30):
        message = refused(await guarded.create(callbackUrl=url), "callbackUrl")
        assert "emit serve --allow-private-callbacks" in message
        listed = await guarded.client.get(guarded.jobs(), headers={"x-api-key": guarded.producer})
        assert listed.json() == []  # nothing was made


async def test_a_public_callback_url_is_taken(guarded: Running) -> None:
    with trio.fail_after(30):
        made = await guarded.create(callbackUrl="https://hooks.example.com/emit")
        assert made.status_code == 201, made.text


async def test_a_private_callback_url_is_taken_when_private_callbacks_are_allowed(
    server: Running,
) -> None:
    with trio.fail_after(30):
        made = await server.create(callbackUrl="http://localhost:9/hook")
        assert made.status_code == 201, made.text


async def test_a_private_push_url_is_refused_when_set(guarded: Running) -> None:
    with trio.fail_after(30):
        patched = await guarded.client.patch(
            f"/api/v1/spaces/{guarded.space}",
            json={"pushUrl": "http://127.0.0.1:9/wake"},
            headers={"x-api-key": ADMIN_KEY},
        )
        assert "emit serve --allow-private-callbacks" in refused(patched, "pushUrl")


# ------------------------------------------------------------------- bad headers


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "中"},
        {"Content-Length": "1"},
        {"transfer-encoding": "chunked"},
        {"Host": "elsewhere.example.com"},
        {"Connection": "close"},
        {"X-Note": "a\r\nX-Injected: 1"},
        {"X-Note": "a\x00b"},
        {"Bad Name": "x"},
        {"": "x"},
    ],
)
async def test_headers_that_cannot_be_sent_are_refused_when_the_job_is_made(
    server: Running, headers: dict[str, str]
) -> None:
    with trio.fail_after(30):
        refused(await server.create(callbackUrl=server.hook, callbackHeaders=headers),
                "callbackHeaders")  # fmt: skip
        patched = await server.client.patch(
            f"/api/v1/spaces/{server.space}",
            json={"pushUrl": server.hook, "pushHeaders": headers},
            headers={"x-api-key": ADMIN_KEY},
        )
        refused(patched, "pushHeaders")
        await server.still_serving()


async def test_a_latin_1_header_value_is_delivered_and_the_server_keeps_serving(
    server: Running,
) -> None:
    with trio.fail_after(30):
        made = await server.create(callbackUrl=server.hook, callbackHeaders={"X-Note": "café"})
        assert made.status_code == 201, made.text
        await server.finish(made.json()["id"])
        [sent] = await server.callback_events(made.json()["id"])
        assert sent["type"] == "callback_sent"
        [arrived] = server.receiver.arrivals
        assert (b"x-note", "café".encode("latin-1")) in arrived
        await server.still_serving()
        again = await server.create(callbackUrl=server.hook)  # the sender still delivers
        await server.finish(again.json()["id"])
        assert (await server.callback_events(again.json()["id"]))[0]["type"] == "callback_sent"


# --------------------------------------------------------- rows that can never go


def _poisoned(job_id: str, space_id: str, headers: Any, n: int) -> Callback:
    return Callback(
        f"01JDQ00000000000000000000{n}", job_id, space_id, "http://127.0.0.1:9/hook",
        headers, '{"jobId": "x"}', 0, 0.0, "pending", 0.0,
    )  # fmt: skip


async def test_outbox_rows_that_can_never_be_sent_are_given_up_at_start(tmp_path: Path) -> None:
    """Rows written before headers were validated (or by hand) that no HTTP client can
    send: each is given up at once, on its job, and the server starts and serves."""
    poisons: list[Any] = [
        {"X-Note": "中"},
        {"Content-Length": "1"},
        {"X-Note": "a\r\nb"},
        ["not", "an", "object"],
    ]
    with trio.fail_after(60):
        async with running(tmp_path / "data", allow_private=True) as first:
            ids = []
            for _ in poisons:
                made = await first.create()
                await first.finish(made.json()["id"])
                ids.append(made.json()["id"])
            rows = [
                _poisoned(j, first.space, h, n)
                for n, (j, h) in enumerate(zip(ids, poisons, strict=True))
            ]
            await first.rt.store.commit([Changes(callbacks=rows)])
        async with running(tmp_path / "data", allow_private=True) as second:
            for job_id in ids:
                [failed] = await second.callback_events(job_id)
                assert failed["type"] == "callback_failed", failed
                assert failed["data"]["willRetry"] is False
            await second.still_serving()
            made = await second.create(callbackUrl=second.hook)
            await second.finish(made.json()["id"])
            assert (await second.callback_events(made.json()["id"]))[0]["type"] == "callback_sent"
            assert await second.rt.store.pending_callbacks() == []
