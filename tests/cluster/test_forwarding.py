"""Forwarding between two real nodes: Hypercorn servers on loopback ports whose runtimes
share one SQLite data directory (so both know every space and key). Node B's router
sends the main space to node A, its owner; everything a client does through B must land
on A, as if it had called A: the quick start, long polls, both streams, the dashboard.
And the hop's edges: an owner gone (503, 1013), a wrong secret (403, 4403), a hop to a
node that lost the space (503, never forwarded again). Real time, waits on answers."""

import json
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import emit
from emit.cluster.forwarding import HOP_HEADER, LOCAL, Moving, Placement, Remote
from emit.domain.model import JobStatus
from emit.http.server import serve
from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server

SECRET = "cluster-secret-" + "s" * 24


@dataclass
class StaticRouter:
    """Where each space lives, as a test says (the rest: here)."""

    places: dict[str, Placement] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def route(self, space_id: str) -> Placement:
        self.asked.append(space_id)
        return self.places.get(space_id, LOCAL)


@dataclass
class Cluster:
    a: Server
    """The owner of the main space."""
    b: Server
    """Forwards the main space to A (the other space is its own)."""
    router_a: StaticRouter
    router_b: StaticRouter


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    settings = HttpSettings(
        admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0, cluster_secret=SECRET
    )
    async with emit.open_runtime(tmp_path / "data") as rt_a:
        space = await rt_a.create_space("main")
        other = await rt_a.create_space("other")
        producer = await rt_a.create_token(space.id, name="p", scopes=["jobs:create", "jobs:read"])
        worker = await rt_a.create_token(space.id, name="w", preset="worker")
        foreign = await rt_a.create_token(other.id, name="w", preset="worker")
        keys = {
            "producer": producer.key,
            "worker": worker.key,
            "public": space.public_token,
            "admin": ADMIN_KEY,
            "other": foreign.key,
            "unknown": "emit_" + "u" * 43,
            "producer-id": producer.id,
        }
        async with (
            emit.open_runtime(tmp_path / "data") as rt_b,
            trio.open_nursery() as nursery,
        ):
            router_a = StaticRouter()
            [url_a] = await nursery.start(
                partial(serve, rt_a, port=0, settings=settings, router=router_a)
            )
            router_b = StaticRouter({space.id: Remote(url_a)})
            [url_b] = await nursery.start(
                partial(serve, rt_b, port=0, settings=settings, router=router_b)
            )
            async with (
                httpx.AsyncClient(base_url=url_a, timeout=30) as client_a,
                httpx.AsyncClient(base_url=url_b, timeout=30) as client_b,
            ):
                a = Server(rt_a, client_a, url_a, space.id, other.id, keys)
                b = Server(rt_b, client_b, url_b, space.id, other.id, keys)
                yield Cluster(a, b, router_a, router_b)
            nursery.cancel_scope.cancel()


def jobs_of(server: Server, tail: str = "") -> str:
    return f"/api/v1/spaces/{server.space}/jobs{tail}"


async def counts(server: Server) -> dict[str, int]:
    """The main space's counts in this node's memory (its space actor's)."""
    found = await server.rt.space(server.space).counts()
    return {status.value: n for status, n in found.items() if n}


async def parked(server: Server, count: int) -> None:
    """Until this node's main space holds ``count`` long polls."""
    while await server.rt.space(server.space).pollers() != count:
        await trio.testing.wait_all_tasks_blocked(0.01)


def assert_unavailable(response: httpx.Response, retry_after: str) -> None:
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["retry-after"] == retry_after


# -------------------------------------------------------------------------- HTTP


async def test_the_quick_start_through_a_non_owner_lands_on_the_owner(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    b = cluster.b
    with trio.fail_after(20):
        made = await b.client.post(
            jobs_of(b), json={"name": "send-email", "payload": {"to": "a@b.c"}},
            headers=b.headers("producer"),
        )  # fmt: skip
        assert made.status_code == 201
        job_id = made.json()["id"]
        polled = await b.client.post(
            jobs_of(b, "/poll"), json={"ack": True}, headers=b.headers("worker")
        )
        [delivery] = polled.json()["jobs"]
        assert delivery["id"] == job_id
        lease = {"leaseId": delivery["leaseId"]}
        progress = await b.client.post(
            f"/api/v1/jobs/{job_id}/progress", json={"percent": 50, "message": "half way", **lease},
            headers=b.headers("worker"),
        )  # fmt: skip
        assert progress.json()["progress"]["percent"] == 50
        done = await b.client.post(
            f"/api/v1/jobs/{job_id}/complete", json={"result": {"sent": True}, **lease},
            headers=b.headers("worker"),
        )  # fmt: skip
        assert done.status_code == 200
        got = await b.client.get(f"/api/v1/jobs/{job_id}", headers=b.headers("producer"))
        assert got.json()["status"] == "completed"
        assert got.json()["result"] == {"sent": True}
        # Every step ran in A's space actor; B's, though it has the space loaded, saw none.
        assert await counts(cluster.a) == {JobStatus.COMPLETED.value: 1}
        assert await counts(b) == {}
    assert SECRET not in caplog.text  # the hop's header reaches no log line


async def test_what_names_no_space_is_served_where_it_arrives(cluster: Cluster) -> None:
    b = cluster.b
    listed = await b.client.get("/api/v1/spaces", headers=b.headers("admin"))
    assert listed.status_code == 200
    assert (await b.client.get("/healthz")).status_code == 200
    unknown = await b.client.get("/api/v1/jobs/nope", headers=b.headers("unknown"))
    assert unknown.status_code == 401  # no key, no space: answered here
    assert cluster.router_b.asked == []
    # A space's own routes ask the router, and the admin's too.
    space = await b.client.get(f"/api/v1/spaces/{b.space}", headers=b.headers("admin"))
    assert space.json()["name"] == "main"
    assert cluster.router_b.asked == [b.space]


async def test_a_long_poll_on_a_non_owner_gets_a_job_created_anywhere(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    for producer in (a, b):
        got: list[httpx.Response] = []

        async def long_poll(got: list[httpx.Response] = got) -> None:
            got.append(
                await b.client.post(
                    jobs_of(b, "/poll"), json={"wait": 30}, headers=b.headers("worker")
                )
            )

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                await parked(a, 1)  # parked in A's space, through B
                made = await producer.client.post(
                    jobs_of(a), json={"name": "j"}, headers=a.headers("producer")
                )
        assert [job["id"] for job in got[0].json()["jobs"]] == [made.json()["id"]]


async def test_a_client_leaving_the_non_owner_ends_its_long_poll_on_the_owner(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    host, port = b.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    body = b'{"wait": 30, "ack": true}'
    await stream.send_all(
        b"POST %s HTTP/1.1\r\nhost: x\r\nx-api-key: %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s"
        % (jobs_of(b, "/poll").encode(), b.keys["worker"].encode(), len(body), body)
    )
    with trio.fail_after(10):
        await parked(a, 1)
        await stream.aclose()
        await parked(a, 0)
    made = await a.client.post(jobs_of(a), json={"name": "j"}, headers=a.headers("producer"))
    assert made.json()["status"] == "pending"  # nobody took it for the client that left


async def test_an_unreachable_owner_is_a_503_with_retry_after(cluster: Cluster) -> None:
    b = cluster.b
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    cluster.router_b.places[b.space] = Remote(f"http://127.0.0.1:{port}")
    with trio.fail_after(10):
        response = await b.client.post(
            jobs_of(b), json={"name": "j"}, headers=b.headers("producer")
        )
        assert_unavailable(response, "1")
        assert "nothing was sent" in response.json()["error"]["message"]
        ws = b.url.replace("http://", "ws://")
        url = f"{ws}/api/v1/realtime/spaces/{b.space}?token={b.keys['producer']}"
        assert await stream_until_closed(url) == ([], 1013)


async def test_an_owner_lost_mid_request_is_a_503_with_the_outcome_unknown(
    cluster: Cluster,
) -> None:
    b = cluster.b

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)  # the request arrived; the owner dies
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        cluster.router_b.places[b.space] = Remote(f"http://127.0.0.1:{port}")
        with trio.fail_after(10):
            response = await b.client.post(
                jobs_of(b), json={"name": "j"}, headers=b.headers("producer")
            )
        nursery.cancel_scope.cancel()
    assert_unavailable(response, "1")
    assert "may or may not have been made" in response.json()["error"]["message"]


async def test_a_body_over_the_limit_is_refused_where_it_arrives(cluster: Cluster) -> None:
    b = cluster.b
    with trio.fail_after(10):
        response = await b.client.post(
            jobs_of(b), content=b"x" * (2 * 1024 * 1024), headers=b.headers("producer")
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_wrong_secret_is_refused_and_a_node_without_one_refuses_any(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.a
    forged = {HOP_HEADER: "not-the-secret-at-all", **a.headers("producer")}
    response = await a.client.post(jobs_of(a), json={"name": "j"}, headers=forged)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    with trio.fail_after(10):
        ws = a.url.replace("http://", "ws://")
        url = f"{ws}/api/v1/realtime/spaces/{a.space}?token={a.keys['producer']}"
        async with open_websocket_url(
            url, extra_headers=[(HOP_HEADER.encode(), b"not-the-secret-at-all")]
        ) as socket_:
            assert await until_closed(socket_) == ([], 4403)
    assert await counts(a) == {}
    # A node with no secret forwards nothing and takes no hop, even with the right secret.
    from emit.http.app import create_app

    async with emit.open_runtime(None) as rt:
        app = create_app(rt, HttpSettings(admin_key=ADMIN_KEY))
        refused = await app.test_client().get("/healthz", headers={HOP_HEADER: SECRET})
        assert refused.status_code == 403
        assert (await refused.get_json())["error"]["code"] == "forbidden"
        assert (await app.test_client().get("/healthz")).status_code == 200


async def test_a_hop_to_a_node_that_lost_the_space_is_a_503_never_forwarded_again(
    cluster: Cluster,
) -> None:
    a, b = cluster.a, cluster.b
    # A's view: the space is moving (its lease lost, no new owner yet).
    cluster.router_a.places[a.space] = Moving(retry_after=3)
    with trio.fail_after(10):
        for node in (a, b):  # directly, or a hop from B
            response = await node.client.post(
                jobs_of(a), json={"name": "j"}, headers=a.headers("producer")
            )
            assert_unavailable(response, "3")
        # A's view: B owns it now; B's, a moment behind: A does. A takes B's hop as its
        # own and answers 503 rather than send it back (a loop).
        cluster.router_a.places[a.space] = Remote(b.url)
        asked = len(cluster.router_b.asked)
        response = await b.client.post(
            jobs_of(a), json={"name": "j"}, headers=a.headers("producer")
        )
        assert_unavailable(response, "1")
        assert len(cluster.router_b.asked) == asked + 1  # B was asked once, by the client
    assert await counts(a) == {} and await counts(b) == {}


# ----------------------------------------------------------------------- sockets


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def until_closed(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], int]:
    messages = []
    try:
        while True:
            messages.append(await receive(ws))
    except ConnectionClosed as closed:
        assert closed.reason is not None
        return messages, closed.reason.code


async def stream_until_closed(
    url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[list[dict[str, Any]], int]:
    async with open_websocket_url(url, extra_headers=headers) as ws:
        return await until_closed(ws)


def ws_of(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def test_the_space_stream_through_a_non_owner_is_the_owners(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    path = f"/api/v1/realtime/spaces/{a.space}?token={a.keys['producer']}"
    jobs = a.rt.space(a.space)
    with trio.fail_after(10):
        async with (
            open_websocket_url(ws_of(a, path)) as direct,
            open_websocket_url(ws_of(b, path)) as hop,
        ):
            hello_a, hello_b = await receive(direct), await receive(hop)
            assert hello_a == hello_b
            job = await jobs.create("report")
            await jobs.claim(job.id)
            await jobs.kill(job.id, "not needed")
            for _ in range(3):
                assert await hop.get_message() == await direct.get_message()
            # The owner refuses: its close code reaches the client as it is.
            cluster.router_b.places[b.other_space] = Remote(a.url)
            wrong = f"/api/v1/realtime/spaces/{b.other_space}?token={b.keys['producer']}"
            assert await stream_until_closed(ws_of(b, wrong)) == ([], 4403)
            unknown = f"/api/v1/realtime/spaces/{b.other_space}?token={b.keys['unknown']}"
            assert await stream_until_closed(ws_of(b, unknown)) == ([], 4401)
            # The owner ends a stream (its key revoked): B's client hears A's close.
            revoked = await a.client.delete(
                f"/api/v1/spaces/{a.space}/tokens/{a.keys['producer-id']}",
                headers=a.headers("admin"),
            )
            assert revoked.status_code == 204
            assert await until_closed(direct) == ([], 4401)
            assert await until_closed(hop) == ([], 4401)


async def test_the_job_stream_through_a_non_owner(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    jobs = a.rt.space(a.space)
    job = await jobs.create("send-email", payload={"to": "a@b.c"})
    with trio.fail_after(10):
        async with open_websocket_url(
            ws_of(b, f"/api/v1/realtime/{job.id}?token={a.keys['public']}")
        ) as ws:
            init = await receive(ws)
            assert init == {"type": "init", "jobId": job.id, "status": "pending",
                            "data": {"progress": None}}  # fmt: skip
            await jobs.claim(job.id)
            await jobs.ack(job.id)
            await jobs.progress(job.id, 50, "half way")
            await jobs.complete(job.id, {"secret": "result"})
            messages, code = await until_closed(ws)
    assert code == 1000
    assert [m["type"] for m in messages] == ["delivered", "started", "progress", "completed"]
    assert "secret" not in json.dumps(messages)
    assert await counts(b) == {}
    # An unknown job is the owner's 4404, through B.
    unknown = ws_of(b, f"/api/v1/realtime/01J00000000000000000000000?token={a.keys['public']}")
    with trio.fail_after(10):
        assert await stream_until_closed(unknown) == ([], 4404)


async def signed_in(server: Server) -> list[tuple[bytes, bytes]]:
    """The headers of a browser signed in to ``server``'s dashboard, on its own page."""
    form = await server.client.get("/signin")
    [csrf] = re.findall(r'name="csrf" value="([^"]+)"', form.text)
    done = await server.client.post("/signin", data={"csrf": csrf, "key": ADMIN_KEY})
    assert done.status_code == 302
    cookie = server.client.cookies["emit_session"]
    return [(b"Cookie", f"emit_session={cookie}".encode()), (b"Origin", server.url.encode())]


async def test_the_dashboard_of_a_space_through_a_non_owner(cluster: Cluster) -> None:
    a, b = cluster.a, cluster.b
    browser = await signed_in(b)  # signed in on B: A honours the session (one admin key)
    jobs = a.rt.space(a.space)
    job = await jobs.create("report")
    with trio.fail_after(10):
        page = await b.client.get(f"/spaces/{b.space}/jobs/{job.id}")
        assert page.status_code == 200
        assert job.id in page.text
        # A form posted through B: A checks the session's CSRF token.
        [csrf] = re.findall(r'name="csrf" value="([^"]+)"', page.text)[:1]
        killed = await b.client.post(f"/spaces/{b.space}/jobs/{job.id}/kill", data={"csrf": csrf})
        assert killed.status_code == 302
        assert (await jobs.get(job.id)).status == JobStatus.KILLED
        # Its socket: A compares the page's Origin with the Host the browser sent to B.
        async with open_websocket_url(
            ws_of(b, f"/spaces/{b.space}/jobs/live"), extra_headers=browser
        ) as live:
            hello = await receive(live)
            assert hello["type"] == "connected"
            assert hello["counts"]["killed"] == 1
            other = await jobs.create("next")
            assert (await receive(live))["jobId"] == other.id
        elsewhere = [browser[0], (b"Origin", b"http://elsewhere.example")]
        path = f"/spaces/{b.space}/jobs/{job.id}/live"
        assert await stream_until_closed(ws_of(b, path), elsewhere) == ([], 4403)
    assert await counts(b) == {}


async def test_a_stopping_node_closes_its_relayed_sockets_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.a
    stop = trio.Event()
    settings = HttpSettings(admin_key=ADMIN_KEY, key_cache_seconds=0, cluster_secret=SECRET)
    router = StaticRouter({a.space: Remote(a.url)})
    path = f"/api/v1/realtime/spaces/{a.space}?token={a.keys['producer']}"
    with trio.fail_after(10):
        async with emit.open_runtime(tmp_path / "data") as rt_c, trio.open_nursery() as nursery:
            [url_c] = await nursery.start(
                partial(
                    serve, rt_c, port=0, settings=settings, router=router,
                    shutdown_trigger=stop.wait, graceful_timeout=30,
                )
            )  # fmt: skip
            async with open_websocket_url(url_c.replace("http://", "ws://") + path) as ws:
                assert (await receive(ws))["type"] == "connected"
                assert a.rt.hub.statistics().space_streams == 1  # the relay's, on A
                stop.set()  # well before the grace of 30 s: closed as the shutdown begins
                assert await until_closed(ws) == ([], 1001)
        # The owner's side of the relay is closed too.
        while a.rt.hub.statistics().space_streams:
            await trio.testing.wait_all_tasks_blocked(0.01)
