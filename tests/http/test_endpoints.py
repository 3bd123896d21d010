"""Every endpoint's happy path and its error cases, over a real server: field names,
defaults, status codes and the error shape of the spec."""

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from emit.http.settings import HttpSettings

from .conftest import ADMIN_KEY, Server, start_server


async def post(
    server: Server, path: str, who: str, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {**server.headers(who), **(headers or {})}
    return await server.client.post(path, json=body, headers=sent)


async def get(server: Server, path: str, who: str, **kw: Any) -> httpx.Response:
    return await server.client.get(path, headers=server.headers(who), **kw)


def jobs_path(server: Server, tail: str = "") -> str:
    return f"/api/v1/spaces/{server.space}/jobs{tail}"


async def make(server: Server, **fields: Any) -> dict[str, Any]:
    response = await post(server, jobs_path(server), "producer", {"name": "j", **fields})
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def take(server: Server, *, ack: bool = False) -> dict[str, Any]:
    response = await post(server, jobs_path(server, "/poll"), "worker", {"count": 1, "ack": ack})
    job: dict[str, Any]
    [job] = response.json()["jobs"]
    return job


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert mentions in body["error"]["message"]


async def test_create_one_and_a_batch(server: Server) -> None:
    job = await make(server, payload={"to": "a@b.c"}, priority=3)
    assert job["status"] == "pending" and job["priority"] == 3 and job["maxRetries"] == 3
    assert job["timeoutSeconds"] == 300 and job["attemptNumber"] == 0
    batch = await post(server, jobs_path(server), "producer", [{"name": "a"}, {"name": "b"}])
    assert batch.status_code == 201 and [j["name"] for j in batch.json()] == ["a", "b"]


async def test_create_errors(server: Server) -> None:
    bad = await post(server, jobs_path(server), "producer", [{"name": "a"}, {"name": 5}])
    assert_error(bad, 400, "invalid_request", "jobs[1]: name")
    assert_error(await post(server, jobs_path(server), "producer", {"maxRetries": 2}), 400,
                 "invalid_request", "name")  # fmt: skip
    assert_error(await post(server, jobs_path(server), "producer", "text"), 400, "invalid_request")
    over = await post(server, jobs_path(server), "producer", [{"name": "a"}] * 1001)
    assert_error(over, 400, "invalid_request", "1 to 1000")
    listed = await get(server, jobs_path(server), "producer")
    assert listed.headers["x-total-count"] == "0"  # nothing from the refused requests


async def test_idempotent_create_answers_200_with_the_existing_job(server: Server) -> None:
    first = await make(server, idempotencyKey="k-1")
    again = await post(
        server, jobs_path(server), "producer", {"name": "j", "idempotencyKey": "k-1"}
    )
    assert again.status_code == 200 and again.json()["id"] == first["id"]


async def test_poll_descriptor_filters_and_validation(server: Server) -> None:
    job = await make(server, payload={"n": 1})
    await make(server, **{"name": "other"})
    response = await post(
        server, jobs_path(server, "/poll"), "worker", {"count": 5, "types": ["j"]}
    )
    [got] = response.json()["jobs"]
    assert got["id"] == job["id"] and got["payload"] == {"n": 1} and got["leaseId"]
    assert set(got) == {"id", "name", "payload", "priority", "timeoutSeconds", "maxRetries",
                        "attemptNumber", "createdAt", "leaseId", "checkpoint"}  # fmt: skip
    empty = await post(server, jobs_path(server, "/poll"), "worker", {"name": "nothing"})
    assert empty.status_code == 200 and empty.json() == {"jobs": []}
    assert_error(await post(server, jobs_path(server, "/poll"), "worker", {"count": 0}), 400,
                 "invalid_request", "count")  # fmt: skip


async def test_long_poll_is_answered_when_a_job_arrives(server: Server) -> None:
    import trio

    got: list[httpx.Response] = []

    async def long_poll() -> None:
        got.append(await post(server, jobs_path(server, "/poll"), "worker", {"wait": 30}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(long_poll)
        await trio.testing.wait_all_tasks_blocked(0.05)
        job = await make(server)
    assert got[0].json()["jobs"][0]["id"] == job["id"]


async def test_a_long_poll_whose_client_hangs_up_is_handed_no_job(server: Server) -> None:
    # A worker parks in a long poll, then its connection drops (process killed, network
    # gone). The server must notice and forget the poll: a job created afterwards stays
    # pending for the next worker, not leased to nobody until its ack deadline.
    import trio
    import trio.testing

    jobs = server.rt.space(server.space)

    async def parked(count: int) -> None:
        while await jobs.pollers() != count:
            await trio.testing.wait_all_tasks_blocked(0.01)

    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    body = b'{"wait": 30, "ack": true}'
    await stream.send_all(
        b"POST %s HTTP/1.1\r\nhost: x\r\nx-api-key: %s\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s"
        % (jobs_path(server, "/poll").encode(), server.keys["worker"].encode(), len(body), body)
    )
    with trio.fail_after(10):
        await parked(1)
        await stream.aclose()
        await parked(0)
    job = await make(server)
    assert (await jobs.get(job["id"])).status == "pending"
    assert (await take(server))["id"] == job["id"]


async def test_the_worker_calls_on_one_job(server: Server) -> None:
    job = await make(server)
    polled = await take(server)
    jid, lease = polled["id"], polled["leaseId"]
    base = f"/api/v1/jobs/{jid}"
    assert (await post(server, f"{base}/ack", "worker", {"leaseId": lease})).json()[
        "status"
    ] == "running"
    progress = await post(server, f"{base}/progress", "worker",
                          {"percent": 40, "message": "m", "subProgress": {"a": {"percent": 5}}})  # fmt: skip
    assert progress.json()["progress"]["percent"] == 40
    assert (await post(server, f"{base}/checkpoint", "worker", {"page": 2})).status_code == 200
    assert (
        await post(server, f"{base}/event", "worker", {"type": "t", "data": 1})
    ).status_code == 200
    kept = await post(server, f"{base}/keepalive", "worker", {"seconds": 60}, headers={})
    assert kept.status_code == 200
    ndjson = b'{"level":"info","message":"one"}\n{"level":"warn","message":"two"}\n'
    logs = await server.client.post(
        f"{base}/logs",
        content=gzip.compress(ndjson),
        headers={
            **server.headers("worker"),
            "content-type": "application/x-ndjson",
            "content-encoding": "gzip",
        },
    )
    assert logs.status_code == 202 and logs.json() == {"accepted": 2}
    as_array = await post(server, f"{base}/logs", "worker", [{"level": "error", "message": "3"}])
    assert as_array.json() == {"accepted": 1}
    read = await get(server, f"{base}/logs", "producer", params={"level": "warn"})
    assert [line["message"] for line in read.json()["logs"]] == ["two", "3"]
    paged = await get(server, f"{base}/logs", "producer", params={"limit": 1})
    assert paged.json()["next"] == 1
    done = await post(server, f"{base}/complete", "worker", {"result": {"ok": True}},
                      headers={"x-emit-lease": lease})  # fmt: skip
    assert done.json()["status"] == "completed" and done.json()["result"] == {"ok": True}
    full = (await get(server, base, "producer")).json()
    assert [e["type"] for e in full["events"]] == [
        "created", "delivered", "started", "progress", "checkpoint", "event", "completed",
    ]  # fmt: skip
    assert full["id"] == job["id"]
    progress_view = (await get(server, f"{base}/progress", "public")).json()
    assert progress_view["status"] == "completed" and progress_view["percent"] == 40


async def test_fencing_and_state_refusals_are_409(server: Server) -> None:
    await make(server)
    polled = await take(server)
    base = f"/api/v1/jobs/{polled['id']}"
    stale = await post(server, f"{base}/complete", "worker", {"leaseId": "01STALE"})
    assert_error(stale, 409, "conflict", "stale")
    assert (await post(server, f"{base}/complete", "worker", {})).status_code == 200
    assert_error(await post(server, f"{base}/ack", "worker"), 409, "conflict", "completed")
    assert_error(await post(server, f"{base}/claim", "worker"), 409, "conflict")
    assert_error(await post(server, f"{base}/fail", "worker", {}), 400, "invalid_request", "error")


async def test_unknown_jobs_are_404(server: Server) -> None:
    missing = "/api/v1/jobs/01AAAAAAAAAAAAAAAAAAAAAAAA"
    assert_error(await get(server, missing, "producer"), 404, "not_found")
    assert_error(await post(server, f"{missing}/ack", "worker"), 404, "not_found")
    assert_error(await get(server, "/api/v1/jobs/not-an-id", "producer"), 404, "not_found")


async def test_batch_complete_and_fail_judge_each_item(server: Server) -> None:
    for _ in range(2):
        await make(server, maxRetries=0)
    a = await take(server)
    b = await take(server)
    done = await post(server, jobs_path(server, "/complete"), "worker",
                      {"jobs": [{"id": a["id"], "result": 1}, {"id": "01NOPE0000000000000000000X"}]})  # fmt: skip
    assert done.json() == {"results": [
        {"id": a["id"], "status": 200},
        {"id": "01NOPE0000000000000000000X", "status": 404, "error": done.json()["results"][1]["error"]},
    ]}  # fmt: skip
    failed = await post(server, jobs_path(server, "/fail"), "worker",
                        {"jobs": [{"id": b["id"], "error": "x"}, {"id": a["id"], "error": "y"}]})  # fmt: skip
    assert [r["status"] for r in failed.json()["results"]] == [200, 409]


async def test_kill_and_retry(server: Server) -> None:
    job = await make(server)
    base = f"/api/v1/jobs/{job['id']}"
    killed = await post(server, f"{base}/kill", "killer", {"reason": "no longer needed"})
    assert killed.json()["status"] == "killed"
    assert killed.json()["result"] == {"reason": "no longer needed"}
    assert_error(await post(server, f"{base}/kill", "killer"), 409, "conflict")
    back = await post(server, f"{base}/retry", "killer")
    assert back.json()["status"] == "pending" and back.json()["attemptNumber"] == 0


async def test_list_stats_and_query_validation(server: Server) -> None:
    made = [await make(server, payload=n) for n in range(3)]
    listed = await get(server, jobs_path(server), "producer", params={"limit": 2})
    assert listed.headers["x-total-count"] == "3"
    assert [j["id"] for j in listed.json()] == [made[2]["id"], made[1]["id"]]
    assert_error(await get(server, jobs_path(server), "producer", params={"status": "nope"}),
                 400, "invalid_request", "status")  # fmt: skip
    assert_error(await get(server, jobs_path(server), "producer", params={"limit": "x"}),
                 400, "invalid_request", "limit")  # fmt: skip
    stats = await get(server, f"/api/v1/spaces/{server.space}/stats", "producer")
    assert stats.json()["counts"] == {"scheduled": 0, "pending": 3, "delivered": 0,
        "running": 0, "completed": 0, "dead": 0, "killed": 0}  # fmt: skip
    assert stats.json()["pollers"] == 0


async def test_management_endpoints(server: Server) -> None:
    made = await post(server, "/api/v1/spaces", "admin", {"name": "video"})
    assert made.status_code == 201
    space = made.json()
    assert set(space) == {"id", "name", "publicToken", "createdAt"}
    names = [s["name"] for s in (await get(server, "/api/v1/spaces", "admin")).json()]
    assert names == ["main", "other", "video"]
    base = f"/api/v1/spaces/{space['id']}"
    patched = await server.client.patch(
        base, json={"retryBackoff": {"initialSeconds": 1, "factor": 2, "maxSeconds": 10}},
        headers=server.headers("admin"),
    )  # fmt: skip
    assert patched.json()["settings"]["retryBackoff"]["factor"] == 2
    token = await post(server, f"{base}/tokens", "admin", {"name": "w", "preset": "worker"})
    assert token.status_code == 201 and set(token.json()) == {
        "id",
        "name",
        "scopes",
        "key",
        "createdAt",
    }
    listed = (await get(server, f"{base}/tokens", "admin")).json()
    assert all("key" not in t for t in listed)
    key = token.json()["key"]
    stats = f"{base}/stats"
    assert (await server.client.get(stats, headers={"x-api-key": key})).status_code == 200
    gone = await server.client.delete(
        f"{base}/tokens/{token.json()['id']}", headers=server.headers("admin")
    )
    assert gone.status_code == 204
    assert (await server.client.get(stats, headers={"x-api-key": key})).status_code == 401
    deleted = await server.client.delete(base, headers=server.headers("admin"))
    assert deleted.status_code == 204
    assert_error(await get(server, base, "admin"), 404, "not_found")


async def test_token_scopes_of_the_wrong_type_are_400(server: Server) -> None:
    tokens = f"/api/v1/spaces/{server.space}/tokens"
    for scopes in (5, True, 1.5, "jobs:poll", {"jobs:poll": True}, [1]):
        refused = await post(server, tokens, "admin", {"name": "n", "scopes": scopes})
        assert_error(refused, 400, "invalid_request", "scopes")


async def test_a_bug_is_a_500_with_its_own_code(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.rt, "check_ready", broken)
    assert_error(await server.client.get("/readyz"), 500, "internal_error")


async def test_the_keys_of_a_deleted_space_are_refused_at_once(tmp_path: Path) -> None:
    # Keys are cached for an hour here: deleting the space must still end them now.
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=3600)
    async for server in start_server(tmp_path, settings):
        stats = f"/api/v1/spaces/{server.space}/stats"
        assert (await get(server, stats, "worker")).status_code == 200  # cached now
        deleted = await server.client.delete(
            f"/api/v1/spaces/{server.space}", headers=server.headers("admin")
        )
        assert deleted.status_code == 204
        assert_error(await get(server, stats, "worker"), 401, "unauthorized")


async def test_health_and_readiness(server: Server) -> None:
    assert (await server.client.get("/healthz")).json() == {"status": "ok"}
    ready = await server.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["spaces"] == 2
    assert_error(await server.client.get("/api/v1/nowhere"), 404, "not_found")
    assert json.loads((await server.client.get("/api/v1/openapi.json")).text)["openapi"] == "3.1.0"


async def test_a_space_retention_is_set_shown_and_refused_when_bad(server: Server) -> None:
    base = f"/api/v1/spaces/{server.space}"
    admin = server.headers("admin")
    retention = {"completed": 3600, "dead": None}
    patched = await server.client.patch(base, json={"retention": retention}, headers=admin)
    assert patched.status_code == 200 and patched.json()["settings"]["retention"] == retention
    assert (await get(server, base, "admin")).json()["settings"]["retention"] == retention
    for bad, field in (({"done": 1}, "retention.done"), ({"dead": -5}, "retention.dead")):
        refused = await server.client.patch(base, json={"retention": bad}, headers=admin)
        assert_error(refused, 400, "invalid_request", field)
    assert (await get(server, base, "admin")).json()["settings"]["retention"] == retention
