"""emit.Client and emit.AsyncClient against a real server on a loopback port (the HTTP
tests' server), and their retries against a scripted transport. Real time for the
server's tests: they wait on answers, never on the clock; the retry tests sleep nowhere
(the client's sleep is replaced by one that records)."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import emit
from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server

JOB = "01M8GN4P7JCVR9N1HMN4FBQZ2V"
WIRE_JOB: dict[str, Any] = {
    "id": JOB,
    "spaceId": "01M8GN3ZEDET8PA26NTTZTNBNF",
    "name": "send-email",
    "payload": {"to": "a@example.com"},
    "status": "pending",
    "priority": 0,
    "maxRetries": 3,
    "attemptNumber": 0,
    "timeoutSeconds": 300,
    "scheduledFor": None,
    "callbackUrl": None,
    "callbackHeaders": None,
    "idempotencyKey": None,
    "progress": None,
    "result": None,
    "createdAt": "2026-11-28T10:30:00.000Z",
    "updatedAt": "2026-11-28T10:30:00.000Z",
    "deliveredAt": None,
    "startedAt": None,
    "completedAt": None,
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        yield running


def quick_start(server: Server) -> emit.JobView:
    """The quick start through the blocking client: a producer and a worker."""
    with (
        emit.Client(server.url, server.keys["producer"], server.space) as producer,
        emit.Client(server.url, server.keys["worker"], server.space) as worker,
    ):
        created = producer.create("send-email", {"to": "a@example.com"}, max_retries=1)
        assert created.status is emit.JobStatus.PENDING
        assert created.payload == {"to": "a@example.com"}
        [delivery] = worker.poll(5, names="send-email")
        assert (delivery.id, delivery.payload, delivery.attempt_number) == (
            created.id,
            {"to": "a@example.com"},
            0,
        )
        lease = delivery.lease_id
        assert worker.ack(delivery.id, lease_id=lease).status is emit.JobStatus.RUNNING
        worker.progress(delivery.id, 50, "rendered", lease_id=lease)
        worker.checkpoint(delivery.id, {"page": 3}, lease_id=lease)
        worker.event(delivery.id, "thumbnail-ready", {"url": "x"}, lease_id=lease)
        assert worker.log(delivery.id, "info", "sent", fields={"ms": 9}, lease_id=lease) == 1
        worker.keepalive(delivery.id, seconds=60, lease_id=lease)
        done = worker.complete(delivery.id, {"sent": True}, lease_id=lease)
        assert done.status is emit.JobStatus.COMPLETED
        job = producer.get(created.id)
        assert job.status is emit.JobStatus.COMPLETED
        assert job.result == {"sent": True}
        assert job.progress == {"percent": 50, "message": "rendered", "subProgress": None}
        assert job.completed_at is not None and job.completed_at >= job.created_at
        assert job.events is not None
        assert [e.type.value for e in job.events][:3] == ["created", "delivered", "started"]
        assert [line.message for line in worker.logs(created.id)] == ["sent"]
        jobs, total = producer.list(status="completed")
        assert ([j.id for j in jobs], total) == ([created.id], 1)
        assert producer.counts()[emit.JobStatus.COMPLETED] == 1
        return job


async def test_the_quick_start_through_the_blocking_client(server: Server) -> None:
    with trio.fail_after(20):
        job = await trio.to_thread.run_sync(quick_start, server)
    assert job.status is emit.JobStatus.COMPLETED


async def test_the_quick_start_through_the_async_client_under_trio(server: Server) -> None:
    with trio.fail_after(20):
        async with (
            emit.AsyncClient(server.url, server.keys["producer"], server.space) as producer,
            emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker,
        ):
            first = await producer.create("resize", {"w": 100}, idempotency_key="k-1")
            again = await producer.create("resize", {"w": 100}, idempotency_key="k-1")
            assert again.id == first.id
            second, third = await producer.create_many(
                [{"name": "resize", "payload": {"w": 1}}, {"name": "resize", "priority": 5}]
            )
            deliveries = await worker.poll(5, names=["resize"], wait=1, ack=True)
            assert [d.id for d in deliveries] == [third.id, first.id, second.id]
            await worker.progress(first.id, 10, "started")
            outcomes = await worker.complete_many(
                [{"id": d.id, "result": d.payload} for d in deliveries[:2]]
            )
            assert outcomes == [emit.ItemResult(third.id, 200), emit.ItemResult(first.id, 200)]
            [refused] = await worker.complete_many([{"id": first.id}])
            assert isinstance(refused, emit.Conflict) and refused.status == 409
            failed = await worker.fail(second.id, "smtp timeout")
            assert (failed.status, failed.attempt_number) == (emit.JobStatus.PENDING, 1)
            job = await producer.get(first.id)
            assert (job.status, job.result) == (emit.JobStatus.COMPLETED, {"w": 100})


async def test_wait_follows_the_job_until_it_is_final(server: Server) -> None:
    with trio.fail_after(20):
        async with (
            emit.AsyncClient(server.url, server.keys["producer"], server.space) as producer,
            emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker,
        ):
            job = await producer.create("send-email")
            waited: list[emit.JobView] = []

            async def wait() -> None:
                waited.append(await producer.wait(job.id, timeout=15))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                [got] = await worker.poll(wait=5, ack=True)
                await worker.progress(got.id, 50, "half")
                assert waited == []
                await worker.complete(got.id, {"sent": True})
            assert [(j.status, j.result) for j in waited] == [
                (emit.JobStatus.COMPLETED, {"sent": True})
            ]
            assert (await producer.wait(job.id)).status is emit.JobStatus.COMPLETED
            with pytest.raises(TimeoutError):
                await producer.wait((await producer.create("later")).id, timeout=0.05)

            # The blocking client, in a thread, on a job that another task finishes.
            second = await producer.create("send-email")
            blocked: list[emit.JobView] = []

            def wait_blocking() -> None:
                with emit.Client(server.url, server.keys["producer"], server.space) as blocking:
                    blocked.append(blocking.wait(second.id, timeout=15))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, wait_blocking)
                [got] = await worker.poll(names="send-email", wait=5, ack=True)
                await worker.fail(got.id, "no", lease_id=got.lease_id)
                [got] = await worker.poll(names="send-email", wait=5, ack=True)
                await worker.complete(got.id, 1)
            assert [(j.status, j.result) for j in blocked] == [(emit.JobStatus.COMPLETED, 1)]


async def test_the_server_s_errors_are_emit_s_exceptions(server: Server) -> None:
    with trio.fail_after(20):
        async with (
            emit.AsyncClient(server.url, server.keys["producer"], server.space) as producer,
            emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker,
            emit.AsyncClient(server.url, server.keys["unknown"], server.space) as stranger,
        ):
            with pytest.raises(emit.NotFound) as not_found:
                await producer.get(JOB)
            assert (not_found.value.status, not_found.value.code) == (404, "not_found")
            job = await producer.create("send-email")
            with pytest.raises(emit.Conflict) as conflict:
                await worker.complete(job.id)
            assert (conflict.value.status, conflict.value.code) == (409, "conflict")
            with pytest.raises(emit.Unauthorized) as unauthorized:
                await stranger.counts()
            assert unauthorized.value.status == 401
            with pytest.raises(emit.Forbidden):
                await producer.poll()
            with pytest.raises(emit.InvalidRequest) as invalid:
                await producer.create("send-email", max_retries=99)
            assert invalid.value.code == "invalid_request"
            assert "maxRetries" in invalid.value.message
            with pytest.raises(emit.EmitError):  # one tree: embedded and remote alike
                await producer.list(status="nonsense")


async def test_the_admin_calls_manage_spaces_and_keys(server: Server) -> None:
    with trio.fail_after(20):
        async with emit.AsyncClient(server.url, ADMIN_KEY) as admin:
            space = await admin.create_space("billing")
            assert space.id in [s.id for s in await admin.list_spaces()]
            updated = await admin.update_space(space.id, {"rateLimit": 50})
            assert updated.settings == {"rateLimit": 50}
            assert (await admin.get_space(space.id)).settings == {"rateLimit": 50}
            made = await admin.create_token(space.id, name="w", preset="worker")
            assert made.key.startswith("emit_") and "jobs:poll" in made.scopes
            async with emit.AsyncClient(server.url, made.key, space.id) as worker:
                assert await worker.poll() == []
                await admin.revoke_token(space.id, made.id)
                with pytest.raises(emit.Unauthorized):
                    await worker.poll()
            [token, public] = sorted(await admin.list_tokens(space.id), key=lambda t: t.public)
            assert (token.id, token.revoked_at is not None, public.public) == (made.id, True, True)
            await admin.delete_space(space.id)
            with pytest.raises(emit.NotFound):
                await admin.get_space(space.id)


# ---------------------------------------------------------------- scripted transport


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    delays: list[float] = []
    monkeypatch.setattr(emit.Client, "_sleep", staticmethod(delays.append))
    yield delays


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[Any]]:
    sent: list[Any] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), sent


def test_429_is_retried_after_its_retry_after(slept: list[float]) -> None:
    limited = httpx.Response(
        429,
        headers={"Retry-After": "2"},
        json={"error": {"code": "rate_limited", "message": "slow down"}},
    )
    transport, sent = scripted(limited, httpx.Response(201, json=WIRE_JOB))
    with emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c:
        job = c.create("send-email", {"to": "a@example.com"})
    assert job.id == JOB and len(sent) == 2
    [delay] = slept
    assert 2 <= delay <= 3


def test_429_past_the_retries_is_rate_limited(slept: list[float]) -> None:
    limited = httpx.Response(
        429,
        headers={"Retry-After": "1"},
        json={"error": {"code": "rate_limited", "message": "slow down"}},
    )
    transport, sent = scripted(limited, limited, limited)
    with (
        emit.Client("http://emit.test", "emit_k", "S", retries=2, transport=transport) as c,
        pytest.raises(emit.RateLimited) as caught,
    ):
        c.get(JOB)
    assert caught.value.retry_after == 1 and len(sent) == 3 and len(slept) == 2


def test_a_create_is_sent_again_after_a_connection_error_only_with_a_key(
    slept: list[float],
) -> None:
    transport, sent = scripted(httpx.ConnectError("refused"))
    with (
        emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c,
        pytest.raises(httpx.ConnectError),
    ):
        c.create("send-email")
    assert len(sent) == 1 and slept == []

    transport, sent = scripted(httpx.ConnectError("refused"), httpx.Response(201, json=WIRE_JOB))
    with emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c:
        c.create("send-email", idempotent=True)
    first, second = (request.read() for request in sent)
    assert first == second and b'"idempotencyKey":null' not in first
    assert len(slept) == 1


def test_a_proxys_502_or_504_is_resent_only_when_that_is_safe(slept: list[float]) -> None:
    gateway = httpx.Response(502, text="<html>bad gateway</html>")
    timeout = httpx.Response(504, text="<html>gateway timeout</html>")
    transport, sent = scripted(gateway, timeout, httpx.Response(200, json=WIRE_JOB))
    with emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c:
        assert c.get(JOB).id == JOB
    assert len(sent) == 3 and len(slept) == 2

    transport, sent = scripted(gateway)
    with (
        emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c,
        pytest.raises(emit.EmitError) as caught,
    ):
        c.create("send-email")  # no idempotency key: it may have been made
    assert caught.value.status == 502 and len(sent) == 1


def test_an_uncertain_503_is_not_resent_without_a_key(slept: list[float]) -> None:
    uncertain = httpx.Response(
        503,
        json={
            "error": {"code": "unavailable", "message": "the change may or may not have been made"}
        },
    )
    transport, sent = scripted(uncertain)
    with (
        emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c,
        pytest.raises(emit.Unavailable),
    ):
        c.create("send-email")
    assert len(sent) == 1 and slept == []


def test_an_error_s_field_and_code_are_kept() -> None:
    refused = httpx.Response(
        400, json={"error": {"code": "invalid_request", "message": "bad", "field": "name"}}
    )
    transport, _ = scripted(
        refused,
        httpx.Response(405, json={"error": {"code": "method_not_allowed", "message": "no"}}),
    )
    with (
        emit.Client("http://emit.test", "emit_k", "S", transport=transport) as c,
        pytest.raises(emit.InvalidRequest) as invalid,
    ):
        c.create("")
        assert (invalid.value.field, invalid.value.status) == ("name", 400)
        with pytest.raises(emit.EmitError) as other:
            c.get(JOB)
        assert (other.value.status, other.value.code) == (405, "method_not_allowed")


def test_wait_reads_the_job_when_the_stream_fails(slept: list[float]) -> None:
    running = WIRE_JOB | {"status": "running"}
    done = WIRE_JOB | {"status": "completed", "result": {"ok": True}}
    transport, sent = scripted(
        *(httpx.Response(200, json=running) for _ in range(3)), httpx.Response(200, json=done)
    )
    # Nothing listens on port 9 of loopback: the stream fails at once.
    with emit.Client("http://127.0.0.1:9", "emit_k", "S", transport=transport) as c:
        assert c.wait(JOB, timeout=60).result == {"ok": True}
    assert len(sent) == 4 and len(slept) == 2


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EMIT_URL", "EMIT_SPACE_ID", "EMIT_PRODUCER_KEY", "EMIT_WORKER_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="EMIT_URL"):
        emit.Client()
    monkeypatch.setenv("EMIT_URL", "http://emit.test/")
    monkeypatch.setenv("EMIT_SPACE_ID", "S")
    monkeypatch.setenv("EMIT_WORKER_KEY", "emit_worker")
    with emit.Client() as c:
        assert (c.url, c.space_id, c.api_key) == ("http://emit.test", "S", "emit_worker")
    monkeypatch.setenv("EMIT_PRODUCER_KEY", "emit_producer")
    with emit.Client() as c:
        assert c.api_key == "emit_producer"
    with emit.Client(api_key="emit_explicit", space_id="T") as c:
        assert (c.api_key, c.space_id) == ("emit_explicit", "T")
