"""A space's jobs in the dashboard: the jobs table (filtered, paginated, live from the
space's stream), bulk retry and kill, and one job's page (progress, outcome, event
timeline, logs, live from the job's stream), with kill and retry.

The live parts are WebSockets of the dashboard's own, opened with the session cookie
instead of a key: the space stream is the API's, message for message
(`serve_space_stream`); the job stream is the API's full view, except that its ``init``
carries the job's history and it stays open after a final event, so a page also sees
the webhook's tries and a later retry. The pages re-read over JSON routes of their own,
behind the same session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, ParamSpec

import orjson
from quart import Response, redirect, request, session, websocket

from ..domain.model import EventType, JobStatus, LogLevel
from ..domain.views import JobView, event_to_wire, log_to_wire
from ..errors import EmitError, NotFound, Unavailable
from ..http.access import seen
from ..isotime import iso
from ..realtime.streams import serve_space_stream, since_param
from .common import STATUSES, admin_page, page, pages, problem, runtime, signed_in, url_for

P = ParamSpec("P")

PAGE = 25
"""Jobs a page of the table."""
BULK_MAX = 100
"""Jobs one bulk post may name."""
LOG_LINES = 1000
"""Log lines a job's page shows (the API's largest page)."""
LEVELS = [level.name.lower() for level in LogLevel]
RETRIABLE = frozenset({JobStatus.DEAD, JobStatus.KILLED})
NOTICE = "jobs_notice"
NOT_YET = "\N{EN DASH}"


def shown_time(seconds: float | None) -> str:
    """A time as the pages show it: ``2026-11-28 09:42:35`` (UTC)."""
    text = iso(seconds)
    return "" if text is None else text.replace("T", " ")[:19]


def row(job: JobView) -> dict[str, Any]:
    """A job as a row of the table: what the page renders and the JSON route sends."""
    progress = job.progress if isinstance(job.progress, dict) else {}
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status.value,
        "attempt": job.attempt_number + 1,
        "attempts": job.max_retries + 1,
        "percent": progress.get("percent"),
        "message": progress.get("message"),
        "createdAt": shown_time(job.created_at),
        "updatedAt": shown_time(job.updated_at),
    }


def outcome(job: JobView) -> dict[str, Any]:
    """What came of the job, from its history: the result, the error it died of (or the
    last attempt's, while it may still be retried), or why it was killed."""
    found: dict[str, Any] = {}
    if job.status == JobStatus.COMPLETED:
        found["result"] = job.result
    for event in reversed(job.events or ()):
        if event.type == EventType.COMPLETED:
            break
        data = event.data if isinstance(event.data, dict) else {}
        if event.type in (EventType.DEAD, EventType.RETRIED) and "error" in data:
            found["error"] = data["error"]
            break
        if event.type == EventType.KILLED:
            found["reason"] = data.get("reason")
            break
        if event.type == EventType.RETRIED and data.get("manual"):
            break  # retried by hand: what came before is another story
    return found


def times(job: JobView) -> dict[str, str]:
    """When the job was delivered, started, finished and last changed, as shown."""
    return {
        "delivered": shown_time(job.delivered_at) or NOT_YET,
        "started": shown_time(job.started_at) or NOT_YET,
        "finished": shown_time(job.completed_at) or NOT_YET,
        "updated": shown_time(job.updated_at),
    }


def admin_json(view: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """A JSON route of the pages: only for a signed-in admin (401 otherwise)."""

    @wraps(view)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
        if not signed_in():
            return _json({"error": "sign in first"}, 401)
        return await view(*args, **kwargs)

    return guarded


def _json(body: Any, status: int = 200) -> Response:
    response = Response(orjson.dumps(body), status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _filters() -> tuple[str | None, str | None, int]:
    status = request.args.get("status") or None
    name = request.args.get("name", "").strip() or None
    offset = request.args.get("offset", "0")
    return status, name, int(offset) if offset.isascii() and offset.isdigit() else 0


# ------------------------------------------------------------------------ the table


@pages.route("/spaces/<space_id>/jobs")
@admin_page
async def jobs(space_id: str) -> Any:
    status, name, offset = _filters()
    try:
        space = await runtime().get_space(space_id)
        listed, total = (
            await runtime()
            .space(space_id)
            .list(status=status, name=name, limit=PAGE, offset=offset)
        )
    except EmitError as error:
        return await problem(error, url_for("dashboard.space", space_id=space_id))
    here: dict[str, Any] = {"status": status or "", "name": name or ""}
    return await page(
        "jobs.html",
        space=space,
        rows=[row(job) for job in listed],
        total=total,
        offset=offset,
        limit=PAGE,
        filters=here,
        statuses=STATUSES,
        notice=session.pop(NOTICE, None),
        newer=url_for("dashboard.jobs", space_id=space_id, **here, offset=max(offset - PAGE, 0)),
        older=url_for("dashboard.jobs", space_id=space_id, **here, offset=offset + PAGE),
    )


@pages.route("/spaces/<space_id>/jobs.json")
@admin_json
async def jobs_json(space_id: str) -> Any:
    """The table's rows, as `jobs` shows them: re-read by the page after it missed
    messages of the stream."""
    status, name, offset = _filters()
    try:
        listed, total = (
            await runtime()
            .space(space_id)
            .list(status=status, name=name, limit=PAGE, offset=offset)
        )
    except EmitError as error:
        return _json({"error": error.message}, error.status)
    return _json({"jobs": [row(job) for job in listed], "total": total, "offset": offset})


@pages.route("/spaces/<space_id>/jobs/bulk", methods=["POST"])
@admin_page
async def bulk(space_id: str) -> Any:
    """Retry or kill the jobs ticked in the table; a notice on the table says how it went."""
    form = await request.form
    back = form.get("back", "")
    if not back.startswith(f"/spaces/{space_id}/jobs"):
        back = url_for("dashboard.jobs", space_id=space_id)
    action = form.get("action")
    ids = form.getlist("ids")
    if action not in ("retry", "kill"):
        return await page("problem.html", 400, message="Retry or kill?", back=back)
    if not ids or len(ids) > BULK_MAX:
        message = f"Tick from 1 to {BULK_MAX} jobs first."
        return await page("problem.html", 400, message=message, back=back)
    jobs = runtime().space(space_id)
    done, refused = 0, []
    for job_id in ids:
        try:
            await (jobs.retry(job_id) if action == "retry" else jobs.kill(job_id))
        except EmitError as error:
            refused.append(f"{job_id}: {error.message}")
        else:
            done += 1
    verb = "Retried" if action == "retry" else "Killed"
    session[NOTICE] = {"text": f"{verb} {done} of {len(ids)} jobs.", "refused": refused[:10]}
    return redirect(back)


# ------------------------------------------------------------------------ one job


@pages.route("/spaces/<space_id>/jobs/<job_id>")
@admin_page
async def job(space_id: str, job_id: str) -> Any:
    level = request.args.get("level") or None
    jobs = runtime().space(space_id)
    try:
        space = await runtime().get_space(space_id)
        found = await jobs.get(job_id)
        lines = await jobs.logs(job_id, level=level, limit=LOG_LINES)
    except EmitError as error:
        return await problem(error, url_for("dashboard.jobs", space_id=space_id))
    return await page(
        "job.html",
        space=space,
        job=found,
        wire=found.to_wire(),
        outcome=outcome(found),
        times=times(found),
        events=[event_to_wire(event) for event in found.events or ()],
        logs=[log_to_wire(line) for line in lines],
        more_logs=len(lines) == LOG_LINES,
        level=level or "trace",
        levels=LEVELS,
        retriable=found.status in RETRIABLE,
    )


@pages.route("/spaces/<space_id>/jobs/<job_id>/logs.json")
@admin_json
async def logs_json(space_id: str, job_id: str) -> Any:
    """The log lines after ``after``, at ``level`` or above: the live tail's catch-up."""
    after = request.args.get("after", "0")
    try:
        lines = (
            await runtime()
            .space(space_id)
            .logs(
                job_id,
                after=int(after) if after.isascii() and after.isdigit() else 0,
                level=request.args.get("level") or None,
                limit=LOG_LINES,
            )
        )
    except EmitError as error:
        return _json({"error": error.message}, error.status)
    return _json({"logs": [log_to_wire(line) for line in lines]})


@pages.route("/spaces/<space_id>/jobs/<job_id>/kill", methods=["POST"])
@admin_page
async def kill(space_id: str, job_id: str) -> Any:
    back = url_for("dashboard.job", space_id=space_id, job_id=job_id)
    reason = (await request.form).get("reason", "").strip() or "killed from the dashboard"
    try:
        await runtime().space(space_id).kill(job_id, reason)
    except EmitError as error:
        return await problem(error, back)
    return redirect(back)


@pages.route("/spaces/<space_id>/jobs/<job_id>/retry", methods=["POST"])
@admin_page
async def retry(space_id: str, job_id: str) -> Any:
    back = url_for("dashboard.job", space_id=space_id, job_id=job_id)
    try:
        await runtime().space(space_id).retry(job_id)
    except EmitError as error:
        return await problem(error, back)
    return redirect(back)


# ------------------------------------------------------------------ live streams


async def _refuse(code: int) -> None:
    await websocket.accept()
    await websocket.close(code)


def _same_origin() -> bool:
    """A browser names the page that opened a socket in ``Origin``; only the dashboard's
    own pages may open its streams (the cookie alone would let another site's page in,
    were it ever sent)."""
    origin = websocket.headers.get("Origin", "")
    host = websocket.headers.get("Host", "")
    return bool(host) and origin.split("://", 1)[-1] == host


async def _admitted(route: str, space_id: str) -> bool:
    """Whether this socket may stream the space: else it is closed with the reason
    (4401 no session, 4403 another origin, 4404 no such space). The space is looked up
    first so that no stream is ever kept for one that does not exist."""
    seen(websocket.scope).route = route
    if not signed_in():
        await _refuse(4401)
        return False
    if not _same_origin():
        await _refuse(4403)
        return False
    try:
        await runtime().get_space(space_id)
    except NotFound:
        await _refuse(4404)
        return False
    return True


@pages.websocket("/spaces/<space_id>/jobs/live")
async def space_live(space_id: str) -> None:
    """The space stream of the API (docs/realtime.md), opened by the session."""
    if not await _admitted("/spaces/<space_id>/jobs/live", space_id):
        return
    since = since_param(websocket.args.get("since"))
    instance = websocket.args.get("streamInstanceId")
    await serve_space_stream(runtime().space(space_id), since, instance, None)


@pages.websocket("/spaces/<space_id>/jobs/<job_id>/live")
async def job_live(space_id: str, job_id: str) -> None:
    """The job stream's full view, opened by the session: ``init`` carries the job's
    history too, and the stream stays open past a final event."""
    if not await _admitted("/spaces/<space_id>/jobs/<job_id>/live", space_id):
        return
    jobs = runtime().space(space_id)
    # Subscribe, then read: a change recorded in between is both in the read and sent,
    # and is skipped by its event seq (as the API's job stream does).
    with jobs.job_stream(job_id, True) as subscription:
        try:
            await jobs.settled()
            found = await jobs.get(job_id)
        except NotFound:
            await _refuse(4404)
            return
        except Unavailable:
            await _refuse(1013)
            return
        await websocket.accept()
        history = found.events or ()
        await websocket.send(
            orjson.dumps(
                {
                    "type": "init",
                    "jobId": found.id,
                    "status": found.status.value,
                    "attemptNumber": found.attempt_number,
                    "data": {"progress": found.progress},
                    "events": [event_to_wire(event) for event in history],
                    "outcome": outcome(found),
                    "times": times(found),
                }
            ).decode()
        )
        last = history[-1].seq if history else 0
        with subscription.scope:
            async for message in subscription.receive:
                text = message.text(True)
                subscription.taken(text)
                event = message.event
                if event.type != "log" and event.event_seq <= last:
                    continue
                await websocket.send(text)
        if subscription.close_code is not None:
            await websocket.close(subscription.close_code)
