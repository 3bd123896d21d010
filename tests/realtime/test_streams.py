"""WebSocket streams against a real server with real WebSocket clients (trio-websocket):
what a progress-only token may see, event by event; the space stream's gap-free seq and
its replay; the close codes; and a slow client cut off while a fast one keeps receiving.
Tests wait on messages, never on the clock."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import emit
from emit.http.settings import HttpSettings
from emit.store.records import Changes


@dataclass
class Live:
    rt: emit.Runtime
    jobs: emit.SpaceJobs
    ws: str
    space: str
    public: str
    reader: str
    worker: str
    other: str


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with emit.open_runtime(tmp_path / "data") as rt:
        space = await rt.create_space("s")
        other = await rt.create_space("o")
        reader = await rt.create_token(space.id, name="r", scopes=["jobs:read"])
        worker = await rt.create_token(space.id, name="w", preset="worker")
        foreign = await rt.create_token(other.id, name="r", scopes=["jobs:read"])
        async with trio.open_nursery() as nursery:
            settings = HttpSettings(key_cache_seconds=0)
            urls = await nursery.start(partial(emit.serve, rt, port=0, settings=settings))
            yield Live(
                rt, rt.space(space.id), urls[0].replace("http://", "ws://"), space.id,
                space.public_token, reader.key, worker.key, foreign.key,
            )  # fmt: skip
            nursery.cancel_scope.cancel()


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


async def run_a_job(jobs: emit.SpaceJobs, job_id: str) -> None:
    await jobs.claim(job_id)
    await jobs.ack(job_id)
    await jobs.progress(job_id, 50, "half way")
    await jobs.log(job_id, "info", "sent")
    await jobs.event(job_id, "thumbnail", {"url": "x"})
    await jobs.complete(job_id, {"secret": "result"})


async def test_the_public_token_sees_every_event_but_no_data(live: Live) -> None:
    job = await live.jobs.create("send-email", payload={"to": "a@b.c"})
    url = f"{live.ws}/api/v1/realtime/{job.id}?token={live.public}"
    async with open_websocket_url(url) as ws:
        init = await receive(ws)
        assert init == {"type": "init", "jobId": job.id, "status": "pending",
                        "data": {"progress": None}}  # fmt: skip
        await run_a_job(live.jobs, job.id)
        messages, code = await until_closed(ws)
    assert code == 1000
    assert [(m["type"], m["status"]) for m in messages] == [
        ("delivered", "delivered"),
        ("started", "running"),
        ("progress", "running"),
        ("event", "running"),
        ("completed", "completed"),
    ]
    assert messages[2]["data"] == {"percent": 50, "message": "half way", "subProgress": None}
    for message in messages:
        if message["type"] != "progress":
            assert "data" not in message  # never the lease, the custom data or the result
    assert "secret" not in json.dumps(messages)


async def test_a_read_key_sees_data_and_log_lines(live: Live) -> None:
    job = await live.jobs.create("j")
    async with open_websocket_url(f"{live.ws}/api/v1/realtime/{job.id}?token={live.reader}") as ws:
        await receive(ws)
        await run_a_job(live.jobs, job.id)
        messages, code = await until_closed(ws)
    assert code == 1000
    kinds = [m["type"] for m in messages]
    assert kinds == ["delivered", "started", "progress", "log", "event", "completed"]
    assert messages[-1]["data"] == {"result": {"secret": "result"}}
    assert messages[3]["data"]["message"] == "sent"


async def test_a_finished_job_sends_init_and_closes(live: Live) -> None:
    job = await live.jobs.create("j")
    await run_a_job(live.jobs, job.id)
    async with open_websocket_url(f"{live.ws}/api/v1/realtime/{job.id}?token={live.public}") as ws:
        messages, code = await until_closed(ws)
    assert [m["type"] for m in messages] == ["init"] and messages[0]["status"] == "completed"
    assert code == 1000


@pytest.mark.parametrize(
    ("who", "where", "code"),
    [
        ("none", "job", 4401),
        ("unknown", "job", 4401),
        ("other", "job", 4404),
        ("reader", "missing-job", 4404),
        ("public", "space", 4403),
        ("other", "space", 4403),
        ("none", "space", 4401),
    ],
)
async def test_close_codes_come_before_any_event(
    live: Live, who: str, where: str, code: int
) -> None:
    job = await live.jobs.create("j")
    token = {"none": "", "unknown": "emit_" + "x" * 43, "other": live.other,
             "reader": live.reader, "public": live.public}[who]  # fmt: skip
    path = {"job": job.id, "missing-job": "01AAAAAAAAAAAAAAAAAAAAAAAA",
            "space": f"spaces/{live.space}"}[where]  # fmt: skip
    async with open_websocket_url(f"{live.ws}/api/v1/realtime/{path}?token={token}") as ws:
        messages, closed = await until_closed(ws)
    assert messages == [] and closed == code


async def test_the_space_stream_is_gap_free_and_replays_what_was_missed(live: Live) -> None:
    url = f"{live.ws}/api/v1/realtime/spaces/{live.space}?token={live.reader}"
    async with open_websocket_url(url) as ws:
        connected = await receive(ws)
        assert connected["type"] == "connected" and connected["missed"] is False
        assert connected["counts"]["pending"] == 0
        first = connected["seq"]
        made = await live.jobs.create_many([{"name": "a"}, {"name": "b"}])
        await live.jobs.claim(made[0].id)
        seen = [await receive(ws) for _ in range(3)]
    assert [m["seq"] for m in seen] == [first + 1, first + 2, first + 3]
    assert [(m["type"], m["jobName"]) for m in seen] == [
        ("created", "a"), ("created", "b"), ("delivered", "a"),
    ]  # fmt: skip
    instance = connected["streamInstanceId"]
    # Events while disconnected, then a reconnect that names what it saw last.
    await live.jobs.kill(made[1].id)
    await live.jobs.complete(made[0].id)
    since = seen[-1]["seq"]
    async with open_websocket_url(f"{url}&since={since}&streamInstanceId={instance}") as ws:
        again = await receive(ws)
        replayed = [await receive(ws) for _ in range(2)]
    assert again["missed"] is False and again["seq"] == since + 2
    assert [(m["seq"], m["type"]) for m in replayed] == [
        (since + 1, "killed"), (since + 2, "completed"),
    ]  # fmt: skip
    async with open_websocket_url(f"{url}&since={since}&streamInstanceId=another") as ws:
        assert (await receive(ws))["missed"] is True


async def test_a_slow_client_is_dropped_while_a_fast_one_keeps_receiving(live: Live) -> None:
    live.rt.hub.queue_size = 8
    job = await live.jobs.create("big")
    await live.jobs.claim(job.id)
    await live.jobs.ack(job.id)
    url = f"{live.ws}/api/v1/realtime/{job.id}?token={live.reader}"
    async with (
        open_websocket_url(url, message_queue_size=1) as slow,
        open_websocket_url(url) as fast,
    ):
        await receive(slow)
        await receive(fast)
        count = 200
        received: list[dict[str, Any]] = []

        async def read_fast() -> None:
            while len(received) < count:
                received.append(await receive(fast))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_fast)
            for n in range(count):  # ~40 kB each: far more than the socket buffers hold
                await live.jobs.progress(job.id, n % 100, "x" * 40_000)
        assert [m["data"]["percent"] for m in received] == [n % 100 for n in range(count)]
        _, code = await until_closed(slow)
    assert code == 1013
    stats = live.rt.hub  # the slow subscription is gone from the hub
    assert all(sub.close_code is None for sub in stats._feeds[live.space].jobs.get(job.id, ()))


async def test_permessage_deflate_is_declined(live: Live) -> None:
    """Browsers always offer permessage-deflate and Hypercorn would accept it; the server
    declines (emit/http/server.py), so messages go uncompressed: no RSV1 bit."""
    job = await live.jobs.create("j")
    host, port = live.ws.removeprefix("ws://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET /api/v1/realtime/{job.id}?token={live.public} HTTP/1.1\r\nhost: {host}\r\n"
            "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n"
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n".encode()
        )
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 2:
            received += await stream.receive_some(65536)
    head, _, frames = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"sec-websocket-accept" in head.lower()
    assert b"sec-websocket-extensions" not in head.lower()
    assert frames[0] == 0x81  # FIN, no RSV1 (not compressed), a text frame: init


async def test_revoking_a_key_ends_its_streams_at_once(live: Live) -> None:
    doomed = await live.rt.create_token(live.space, name="doomed", scopes=["jobs:read"])
    job = await live.jobs.create("j")
    space_url = f"{live.ws}/api/v1/realtime/spaces/{live.space}?token={doomed.key}"
    job_url = f"{live.ws}/api/v1/realtime/{job.id}?token={doomed.key}"
    kept_url = f"{live.ws}/api/v1/realtime/{job.id}?token={live.reader}"
    async with (
        open_websocket_url(space_url) as space_ws,
        open_websocket_url(job_url) as job_ws,
        open_websocket_url(kept_url) as kept_ws,
    ):
        assert (await receive(space_ws))["type"] == "connected"
        assert (await receive(job_ws))["type"] == "init"
        assert (await receive(kept_ws))["type"] == "init"
        await live.rt.revoke_token(live.space, doomed.id)
        with trio.fail_after(10):
            assert (await until_closed(space_ws))[1] == 4401
            assert (await until_closed(job_ws))[1] == 4401
        await live.jobs.claim(job.id)  # another key's stream goes on
        assert (await receive(kept_ws))["type"] == "delivered"


async def test_a_key_revoked_by_another_process_ends_its_streams(live: Live) -> None:
    """The CLI revokes in the store directly; the server finds out by looking again."""
    doomed = await live.rt.create_token(live.space, name="doomed", scopes=["jobs:read"])
    job = await live.jobs.create("j")
    async with open_websocket_url(f"{live.ws}/api/v1/realtime/{job.id}?token={doomed.key}") as ws:
        assert (await receive(ws))["type"] == "init"
        await live.rt.store.commit([Changes(revoked_tokens=[(doomed.id, 1.0)])])
        with trio.fail_after(10):
            assert (await until_closed(ws))[1] == 4401


async def open_first_stream_during_a_write(
    live: Live,
    monkeypatch: pytest.MonkeyPatch,
    subscribe: str,
    change: Callable[[], Awaitable[object]],
    stream: Callable[[], Awaitable[None]],
) -> None:
    """Make ``change``, hold its commit, open the space's first stream (``stream``), and
    let the commit go once the stream has subscribed (the hub's ``subscribe``): the
    change is recorded before the stream and durable after it."""
    store, hub = live.rt.store, live.rt.hub
    commit, subscribe_to = store.commit, getattr(hub, subscribe)
    held, subscribed, release = trio.Event(), trio.Event(), trio.Event()

    async def gated(batches: list[Changes]) -> None:
        held.set()
        await release.wait()
        await commit(batches)

    def watching(*args: Any) -> Any:
        answer = subscribe_to(*args)
        subscribed.set()
        return answer

    monkeypatch.setattr(store, "commit", gated)
    monkeypatch.setattr(hub, subscribe, watching)
    with trio.fail_after(30):  # a bound, not a wait: the bug leaves a job stream open for good
        async with trio.open_nursery() as nursery:
            nursery.start_soon(change)
            await held.wait()  # recorded by the space, not yet durable
            nursery.start_soon(stream)
            await subscribed.wait()  # the space's first stream: watched from now on
            release.set()


async def test_the_first_stream_of_a_space_never_misses_a_change_in_flight(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The space has never been streamed, so its changes are not queued for streams. A
    job stream that opens while the job's completion is being written must still see
    it: in its init, or as the final event (spec §6: after a final event, close 1000)."""
    job = await live.jobs.create("j")
    await live.jobs.claim(job.id)
    url = f"{live.ws}/api/v1/realtime/{job.id}?token={live.public}"
    seen: list[tuple[list[dict[str, Any]], int]] = []

    async def stream() -> None:
        async with open_websocket_url(url) as ws:
            seen.append(await until_closed(ws))

    await open_first_stream_during_a_write(
        live, monkeypatch, "subscribe_job", partial(live.jobs.complete, job.id, {"ok": True}),
        stream,
    )  # fmt: skip
    [(messages, code)] = seen
    assert code == 1000
    assert messages[-1]["status"] == "completed", messages


async def test_the_first_space_stream_counts_a_change_in_flight(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a space stream: a change recorded before the space's first stream
    and written after it is in the counts the stream starts from (it is never sent)."""
    job = await live.jobs.create("j")
    url = f"{live.ws}/api/v1/realtime/spaces/{live.space}?token={live.reader}"
    seen: list[dict[str, Any]] = []

    async def stream() -> None:
        async with open_websocket_url(url) as ws:
            seen.append(await receive(ws))

    await open_first_stream_during_a_write(
        live, monkeypatch, "subscribe_space", partial(live.jobs.claim, job.id), stream
    )
    [connected] = seen
    assert connected["type"] == "connected"
    assert (connected["counts"]["pending"], connected["counts"]["delivered"]) == (0, 1)


async def test_a_client_that_keeps_up_is_not_cut_off_by_a_burst(live: Live) -> None:
    """Two creates of 1000 jobs put 2000 messages in a space stream's queue at once, more
    than its 1024; a client reading all the while keeps its stream (spec §6: only a
    client that reads too slowly is dropped)."""
    url = f"{live.ws}/api/v1/realtime/spaces/{live.space}?token={live.reader}"
    async with open_websocket_url(url) as ws:
        assert (await receive(ws))["type"] == "connected"
        received: list[dict[str, Any]] = []

        async def read() -> None:
            while len(received) < 2000:
                received.append(await receive(ws))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for start in (0, 1000):
                    await live.jobs.create_many(
                        [{"name": f"j{n}"} for n in range(start, start + 1000)]
                    )
    assert [m["jobName"] for m in received] == [f"j{n}" for n in range(2000)]


async def test_a_space_that_cannot_answer_closes_a_new_stream_with_1013(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A space reloading (or its store failing) cannot give a stream its starting point:
    the stream is closed with 1013 (try again later), before any message."""

    async def unavailable(self: emit.SpaceJobs) -> None:
        raise emit.Unavailable("the space is reloading")

    monkeypatch.setattr(emit.SpaceJobs, "settled", unavailable)
    job = await live.jobs.create("j")
    for path, token in ((job.id, live.public), (f"spaces/{live.space}", live.reader)):
        async with open_websocket_url(f"{live.ws}/api/v1/realtime/{path}?token={token}") as ws:
            messages, code = await until_closed(ws)
        assert (messages, code) == ([], 1013)
