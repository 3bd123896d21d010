"""The WebSocket endpoints of spec §6: a job's stream and a space's stream.

Each socket is a subscription to the runtime's `EventHub`, made and read through the
runtime (`SpaceJobs.stream`, `SpaceJobs.job_stream`). Authorization happens before
any event: a missing, unknown or revoked token closes with 4401, a token that may not
see the stream with 4403, an unknown job (or one of another space) with 4404. A progress
-only token gets every event of a job with ``data`` removed, except on ``init`` and
``progress``, and never ``log`` lines.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import trio
from quart import websocket
from quart_trio import QuartTrio

from ..domain import scopes
from ..errors import NotFound, Unauthorized, Unavailable
from ..http import access
from ..http.auth import Authenticator, Caller
from ..runtime import Runtime, SpaceJobs
from .hub import FINAL, JobMessage, Key, SpaceMessage, Subscription

log = logging.getLogger("emit.realtime")


async def _close(code: int) -> None:
    # A client that has stopped reading cannot hold this: every write to it, the close
    # frame included, is bounded by the server's send timeout, after which the
    # connection is dropped (emit/http/connection.py). A timeout here could not help:
    # Hypercorn shields a write in flight from cancellation.
    await websocket.close(code)


async def _refuse(code: int) -> None:
    await websocket.accept()
    await _close(code)


async def _send(message: Any) -> None:
    await websocket.send(orjson.dumps(message).decode())


_SEQ_DIGITS = 18
"""Digits of the largest ``since`` read as a number: no stream reaches a seq that long."""


def since_param(text: str | None) -> int | None:
    """The ``since`` query value (docs/realtime.md): a whole number in ASCII digits, or
    None when absent or anything else (``-1``, ``1.5``, ``²``), as if not given. One
    longer than any seq can be is above the latest seq, so the stream says ``missed``."""
    if not text or not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= _SEQ_DIGITS else 10**_SEQ_DIGITS


async def _caller(auth: Authenticator) -> tuple[Caller, Key] | None:
    token = websocket.args.get("token") or None
    try:
        caller = await auth.caller(token)
    except Unauthorized:
        await _refuse(4401)
        return None
    access.seen(websocket.scope).key = caller.key_id
    if caller.admin:
        await _refuse(4403)  # the admin key manages spaces and tokens only
        return None
    return caller, Key(caller.key_id, caller.key_hash)


async def watch_keys(runtime: Runtime, auth: Authenticator, interval: float) -> None:
    """End the streams of keys revoked behind this server's back (by the CLI, another
    process): every ``interval`` seconds, look up the keys that have a stream open, in
    one read. A key revoked through this server ends its streams at once
    (`Runtime.revoke_token`)."""
    while True:
        await trio.sleep(interval)
        try:
            ended = await runtime.end_revoked_streams()
        except Exception:  # a busy or failing store: look again next time
            log.warning("could not check the keys of open streams", exc_info=True)
            continue
        for token_id in ended:
            auth.forget(token_id)


async def _end(subscription: Subscription) -> None:
    if subscription.close_code is not None:
        await _close(subscription.close_code)


async def serve_space_stream(
    jobs: SpaceJobs, since: int | None, instance: str | None, key: Key | None
) -> None:
    """A space stream on the socket of this request, once its caller may see it: the
    ``connected`` message, the replay asked for, then every message as it comes. Shared
    by the API's stream and the dashboard's (which checks its session instead of a key)."""
    with jobs.stream(since, instance, key) as start:
        subscription, missed = start.subscription, start.missed
        # The counts as of a commit, and the stream's seq at that same commit: a
        # client starting fresh gets the messages after that seq only, so each change
        # is counted once (the subscription, made first, already queues them). Changes
        # recorded before a space's first stream were not queued: wait until they are
        # durable, so the counts include them.
        try:
            await jobs.settled()
            counts, at = await jobs.stream_snapshot()
        except Unavailable:
            await _refuse(1013)  # the space is reloading or its store failing: retry
            return
        replaying = since is not None and not missed
        skip = 0 if replaying else at
        await websocket.accept()
        await _send(
            {
                "type": "connected",
                "seq": start.seq if replaying else at,
                "streamInstanceId": start.instance_id,
                "missed": missed,
                "counts": {status.value: n for status, n in counts.items()},
            }
        )
        send = websocket.send  # the proxy looked up once, not once per message
        entry: SpaceMessage
        for entry in start.replay:
            if subscription.close_code is not None:
                break  # ended meanwhile (its key revoked, the space deleted)
            await send(entry.text())
        with subscription.scope:
            async for entry in subscription.receive:
                text = entry.text()
                subscription.taken(text)
                if entry.seq > skip:
                    await send(text)
        await _end(subscription)


def add_stream_routes(app: QuartTrio, runtime: Runtime, auth: Authenticator) -> None:
    @app.before_serving
    async def start_watching_keys() -> None:
        app.add_background_task(watch_keys, runtime, auth, max(auth.cache_seconds, 0.1))

    @app.websocket("/api/v1/realtime/spaces/<space_id>")
    async def space_stream(space_id: str) -> None:
        access.seen(websocket.scope).route = "/api/v1/realtime/spaces/<space_id>"
        found = await _caller(auth)
        if found is None:
            return
        caller, key = found
        if scopes.READ not in caller.scopes or caller.space_id != space_id:
            await _refuse(4403)
            return
        since = since_param(websocket.args.get("since"))
        instance = websocket.args.get("streamInstanceId")
        await serve_space_stream(runtime.space(space_id), since, instance, key)

    @app.websocket("/api/v1/realtime/<job_id>")
    async def job_stream(job_id: str) -> None:
        access.seen(websocket.scope).route = "/api/v1/realtime/<job_id>"
        found = await _caller(auth)
        if found is None:
            return
        caller, key = found
        if scopes.READ_PROGRESS not in caller.scopes or caller.space_id is None:
            await _refuse(4403)
            return
        full = scopes.READ in caller.scopes
        # Subscribe before reading the job, so nothing falls between the two: changes the
        # space records from now on reach the subscription. Those recorded before it, in
        # a space nobody streamed yet, were not queued for streams: wait until they are
        # durable, so the read below shows them.
        jobs = runtime.space(caller.space_id)
        with jobs.job_stream(job_id, full, key) as subscription:
            try:
                await jobs.settled()
            except Unavailable:
                await _refuse(1013)  # the space is reloading or its store failing: retry
                return
            try:
                job = await jobs.job(job_id)
            except NotFound:  # none, or one of another space
                await _refuse(4404)
                return
            await websocket.accept()
            await _send(
                {
                    "type": "init",
                    "jobId": job.id,
                    "status": job.status.value,
                    "data": {"progress": job.progress},
                }
            )
            if job.status.final:
                await _close(1000)
                return
            seen = job.event_seq
            send = websocket.send  # the proxy looked up once, not once per message
            message: JobMessage
            with subscription.scope:
                async for message in subscription.receive:
                    text = message.text(full)
                    subscription.taken(text)
                    event = message.event
                    if event.type == "log":
                        if not full:
                            continue
                    elif event.event_seq <= seen:
                        continue  # already in the state init showed
                    await send(text)
                    if event.type in FINAL:
                        await _close(1000)
                        return
            await _end(subscription)
