"""Every endpoint, as data: method, path, who may call it, and a thin handler.

The table is the single source for the app's URL rules, the OpenAPI document and the
authorization-matrix test. Handlers parse the request, call the runtime (which sends one
message to one actor) and render the answer; no rule of the job queue lives here.
"""

from __future__ import annotations

import functools
import gzip
import math
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ..codec import loads
from ..domain import scopes
from ..domain.model import validate_poll
from ..domain.views import Delivery, JobView, log_to_wire, space_to_wire, token_to_wire
from ..errors import EmitError, InvalidRequest, PayloadTooLarge
from ..isotime import iso
from ..metrics import CONTENT_TYPE
from ..runtime import Runtime, SpaceJobs
from .auth import Caller

ADMIN = "admin"
PUBLIC = "public"
METRICS = "metrics"
"""The access of ``GET /metrics``: the metrics token or the admin key."""
S = "/api/v1/spaces/<space_id>"
J = "/api/v1/jobs/<job_id>"


@dataclass(slots=True)
class Call:
    """One request, as the handlers see it."""

    runtime: Runtime
    caller: Caller
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    max_body: int
    forget_token: Callable[[str], None]
    """The key cache forgets a revoked token at once."""
    forget_space: Callable[[str], None] = field(default=lambda space_id: None)
    """The key cache forgets a deleted space's keys at once."""
    undelivered: list[Callable[[], None]] = field(default_factory=list)
    """Run if the answer is not sent in full (the client hung up): see `app.HandOver`."""
    _json: Any = field(default=None)
    _parsed: bool = False

    def json(self, *, default: Any = None) -> Any:
        """The body as JSON (``default`` when empty); 400 if it is not JSON."""
        if not self._parsed:
            self._parsed = True
            if not self.body.strip():
                self._json = default
            else:
                try:
                    self._json = loads(self.body)
                except ValueError as exc:
                    raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
        return self._json

    def object(self) -> dict[str, Any]:
        body = self.json(default={})
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        return body

    @property
    def jobs(self) -> SpaceJobs:
        assert self.caller.space_id is not None
        return self.runtime.space(self.caller.space_id)

    def lease(self, body: Mapping[str, Any] | None = None) -> str | None:
        value = (body or {}).get("leaseId") or self.headers.get("x-emit-lease")
        if value is not None and not isinstance(value, str):
            raise InvalidRequest("leaseId must be a string", field="leaseId")
        return value

    def int_query(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            span = f"from {low} to {high}" if high < 10**9 else f">= {low}"
            raise InvalidRequest(f"{name} must be an integer {span}", field=name)
        return value


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    """Rendered as JSON; bytes go out as they are (with a Content-Type in ``headers``)."""
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    access: str
    """A scope the key must hold, ``admin``, ``metrics``, or ``public``."""
    handler: Handler
    summary: str
    success: int = 200


def _job(view: JobView) -> dict[str, Any]:
    return view.to_wire(encoded=True)


# ------------------------------------------------------------------------ producers


async def create_jobs(call: Call) -> Reply:
    body = call.json()
    if isinstance(body, list):
        made = await call.jobs.submit(body)
        return Reply(201, [_job(job) for job, _ in made])
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a job object or an array of up to 1000")
    [(job, created)] = await call.jobs.submit([body], batch=False)
    return Reply(201 if created else 200, _job(job))


# -------------------------------------------------------------------------- workers


async def poll(call: Call) -> Reply:
    request = validate_poll(call.object())
    if request.ack and scopes.ACK not in call.caller.scopes:
        from ..errors import Forbidden

        raise Forbidden(f"Missing required scope: {scopes.ACK} (poll with ack: true)")
    deliveries = await call.jobs.poll_request(request)
    await _hand_over(call, deliveries)
    return Reply(200, {"jobs": [delivery.to_wire(encoded=True) for delivery in deliveries]})


async def _hand_over(call: Call, deliveries: list[Delivery]) -> None:
    """Jobs taken for a client that is gone go back, not to a lease nobody holds: if
    the client hangs up as the answer comes (the request is then cancelled here), or
    before the answer is sent in full (the server then runs ``call.undelivered``)."""
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except trio.Cancelled:
        call.jobs.give_back(deliveries)
        raise
    call.undelivered.append(functools.partial(call.jobs.give_back, deliveries))


def _batch_items(call: Call) -> list[dict[str, Any]]:
    body = call.object()
    items = body.get("jobs")
    if not isinstance(items, list) or not 1 <= len(items) <= 500:
        raise InvalidRequest("jobs must be a list of 1 to 500 items", field="jobs")
    return items


def _results(ids: list[Any], outcomes: list[JobView | EmitError]) -> Reply:
    results = []
    for job_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, EmitError):
            results.append({"id": job_id, "status": outcome.status, "error": outcome.message})
        else:
            results.append({"id": job_id, "status": 200})
    return Reply(200, {"results": results})


async def complete_many(call: Call) -> Reply:
    items = _batch_items(call)
    outcomes = await call.jobs.complete_many(items)
    return _results([item.get("id") for item in items], outcomes)


async def fail_many(call: Call) -> Reply:
    items = _batch_items(call)
    outcomes = await call.jobs.fail_many(items)
    return _results([item.get("id") for item in items], outcomes)


async def claim(call: Call) -> Reply:
    delivery = await call.jobs.claim(call.params["job_id"])
    await _hand_over(call, [delivery])
    return Reply(200, delivery.to_wire(encoded=True))


async def ack(call: Call) -> Reply:
    body = call.object()
    return Reply(200, _job(await call.jobs.ack(call.params["job_id"], lease_id=call.lease(body))))


async def progress(call: Call) -> Reply:
    body = call.object()
    view = await call.jobs.progress(
        call.params["job_id"],
        body.get("percent"),  # type: ignore[arg-type]  # validated by the runtime
        body.get("message"),  # type: ignore[arg-type]
        sub_progress=body.get("subProgress"),
        lease_id=call.lease(body),
    )
    return Reply(200, _job(view))


async def checkpoint(call: Call) -> Reply:
    body = call.json()
    if not isinstance(body, dict):
        raise InvalidRequest("a checkpoint must be a JSON object")
    lease = call.lease(body)
    state = {key: value for key, value in body.items() if key != "leaseId"}
    return Reply(
        200, _job(await call.jobs.checkpoint(call.params["job_id"], state, lease_id=lease))
    )


async def record_event(call: Call) -> Reply:
    body = call.object()
    kind: Any = body.get("type")  # validated by the runtime
    view = await call.jobs.event(
        call.params["job_id"], kind, body.get("data"), lease_id=call.lease(body)
    )
    return Reply(200, _job(view))


async def post_logs(call: Call) -> Reply:
    data = call.body
    if call.headers.get("content-encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(data, call.max_body + 1)
        except (zlib.error, gzip.BadGzipFile):
            raise InvalidRequest("the body is not valid gzip") from None
        if len(data) > call.max_body:
            raise PayloadTooLarge(f"the log body is over {call.max_body} bytes uncompressed")
    content_type = call.headers.get("content-type", "")
    lines: Any
    if "ndjson" in content_type:
        lines = []
        for number, raw in enumerate(data.splitlines(), start=1):
            if raw.strip():
                try:
                    lines.append(loads(raw))
                except ValueError:
                    raise InvalidRequest(f"line {number} is not JSON") from None
    else:
        try:
            lines = loads(data) if data.strip() else None
        except ValueError as exc:
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
        if not isinstance(lines, list):
            raise InvalidRequest("send NDJSON (application/x-ndjson) or a JSON array of lines")
    accepted = await call.jobs.log_lines(call.params["job_id"], lines, lease_id=call.lease(None))
    return Reply(202, {"accepted": accepted})


async def keepalive(call: Call) -> Reply:
    body = call.object()
    view = await call.jobs.keepalive(
        call.params["job_id"], seconds=body.get("seconds"), lease_id=call.lease(body)
    )
    return Reply(200, _job(view))


async def complete(call: Call) -> Reply:
    body = call.object()
    view = await call.jobs.complete(
        call.params["job_id"], body.get("result"), lease_id=call.lease(body)
    )
    return Reply(200, _job(view))


async def fail(call: Call) -> Reply:
    body = call.object()
    error = body.get("error")
    if not isinstance(error, str):
        raise InvalidRequest("error is required: a string", field="error")
    view = await call.jobs.fail(call.params["job_id"], error, lease_id=call.lease(body))
    return Reply(200, _job(view))


async def kill(call: Call) -> Reply:
    body = call.object()
    return Reply(200, _job(await call.jobs.kill(call.params["job_id"], body.get("reason"))))


async def retry(call: Call) -> Reply:
    return Reply(200, _job(await call.jobs.retry(call.params["job_id"])))


# -------------------------------------------------------------------------- readers


async def stats(call: Call) -> Reply:
    counts = await call.jobs.counts()
    # "pollers" (extension): long polls parked right now, for dashboards and tests.
    return Reply(
        200,
        {
            "counts": {status.value: n for status, n in counts.items()},
            "pollers": await call.jobs.pollers(),
        },
    )


async def list_jobs(call: Call) -> Reply:
    page, total = await call.jobs.list(
        status=call.query.get("status") or None,
        name=call.query.get("name") or None,
        limit=call.int_query("limit", 50, 1, 100),
        offset=call.int_query("offset", 0, 0, 2**62),
    )
    return Reply(200, [_job(job) for job in page], (("X-Total-Count", str(total)),))


async def get_job(call: Call) -> Reply:
    return Reply(200, _job(await call.jobs.get(call.params["job_id"])))


async def get_progress(call: Call) -> Reply:
    job = await call.jobs.get(call.params["job_id"])
    shown = job.progress if isinstance(job.progress, dict) else {}
    return Reply(
        200,
        {
            "jobId": job.id,
            "status": job.status.value,
            "percent": shown.get("percent"),
            "message": shown.get("message"),
            "subProgress": shown.get("subProgress"),
            "updatedAt": iso(job.updated_at),
        },
    )


async def get_logs(call: Call) -> Reply:
    limit = call.int_query("limit", 100, 1, 1000)
    lines = await call.jobs.logs(
        call.params["job_id"],
        after=call.int_query("after", 0, 0, 2**62),
        limit=limit,
        level=call.query.get("level") or None,
        q=call.query.get("q") or None,
    )
    following = lines[-1].seq if len(lines) == limit else None
    return Reply(200, {"logs": [log_to_wire(line) for line in lines], "next": following})


# ---------------------------------------------------------------------- management


async def create_space(call: Call) -> Reply:
    space = await call.runtime.create_space(call.object().get("name"))  # type: ignore[arg-type]
    return Reply(201, space_to_wire(space))


async def list_spaces(call: Call) -> Reply:
    return Reply(200, [space_to_wire(space) for space in await call.runtime.list_spaces()])


async def get_space(call: Call) -> Reply:
    return Reply(
        200, space_to_wire(await call.runtime.get_space(call.params["space_id"]), settings=True)
    )


async def update_space(call: Call) -> Reply:
    space = await call.runtime.update_space(call.params["space_id"], call.object())
    call.forget_space(space.id)  # its keys are read afresh: a new rateLimit holds at once
    return Reply(200, space_to_wire(space, settings=True))


async def delete_space(call: Call) -> Reply:
    await call.runtime.delete_space(call.params["space_id"])
    call.forget_space(call.params["space_id"])  # its keys are unknown from now on: 401
    return Reply(204, None)


async def create_token(call: Call) -> Reply:
    body = call.object()
    made = await call.runtime.create_token(
        call.params["space_id"],
        name=body.get("name"),  # type: ignore[arg-type]
        scopes=body.get("scopes"),
        preset=body.get("preset"),
    )
    return Reply(
        201,
        {
            "id": made.id,
            "name": made.name,
            "scopes": sorted(made.scopes),
            "key": made.key,
            "createdAt": iso(made.created_at),
        },
    )


async def list_tokens(call: Call) -> Reply:
    tokens = await call.runtime.list_tokens(call.params["space_id"])
    return Reply(200, [token_to_wire(token) for token in tokens])


async def revoke_token(call: Call) -> Reply:
    await call.runtime.revoke_token(call.params["space_id"], call.params["token_id"])
    call.forget_token(call.params["token_id"])
    return Reply(204, None)


# -------------------------------------------------------------------------- health


async def healthz(call: Call) -> Reply:
    return Reply(200, {"status": "ok"})


async def readyz(call: Call) -> Reply:
    await call.runtime.check_ready()
    return Reply(200, {"status": "ready", "spaces": call.runtime.running_spaces()})


async def metrics(call: Call) -> Reply:
    return Reply(200, call.runtime.metrics_text(), (("Content-Type", CONTENT_TYPE),))


ROUTES: tuple[Route, ...] = (
    Route("POST", f"{S}/jobs", scopes.CREATE, create_jobs, "Create a job, or up to 1000", 201),
    Route("POST", f"{S}/jobs/poll", scopes.POLL, poll, "Take ready jobs (long poll: wait)"),
    Route("POST", f"{S}/jobs/complete", scopes.COMPLETE, complete_many, "Complete a batch"),
    Route("POST", f"{S}/jobs/fail", scopes.FAIL, fail_many, "Fail a batch"),
    Route("GET", f"{S}/jobs", scopes.READ, list_jobs, "List jobs, newest first"),
    Route("GET", f"{S}/stats", scopes.READ, stats, "Jobs by status"),
    Route("POST", f"{J}/claim", scopes.POLL, claim, "Take this pending job"),
    Route("POST", f"{J}/ack", scopes.ACK, ack, "Start a delivered job"),
    Route("POST", f"{J}/progress", scopes.PROGRESS, progress, "Report progress"),
    Route("POST", f"{J}/checkpoint", scopes.EVENT, checkpoint, "Save a checkpoint"),
    Route("POST", f"{J}/event", scopes.EVENT, record_event, "Record a custom event"),
    Route("POST", f"{J}/logs", scopes.EVENT, post_logs, "Append log lines", 202),
    Route("POST", f"{J}/keepalive", scopes.KEEPALIVE, keepalive, "Push the deadline out"),
    Route("POST", f"{J}/complete", scopes.COMPLETE, complete, "Complete the job"),
    Route("POST", f"{J}/fail", scopes.FAIL, fail, "Fail this attempt"),
    Route("POST", f"{J}/kill", scopes.KILL, kill, "Kill the job"),
    Route("POST", f"{J}/retry", scopes.KILL, retry, "Retry a dead or killed job"),
    Route("GET", J, scopes.READ, get_job, "The job with its events"),
    Route("GET", f"{J}/progress", scopes.READ_PROGRESS, get_progress, "The job's progress"),
    Route("GET", f"{J}/logs", scopes.READ, get_logs, "The job's log lines"),
    Route("POST", "/api/v1/spaces", ADMIN, create_space, "Create a space", 201),
    Route("GET", "/api/v1/spaces", ADMIN, list_spaces, "List spaces"),
    Route("GET", "/api/v1/spaces/<space_id>", ADMIN, get_space, "A space and its settings"),
    Route("PATCH", "/api/v1/spaces/<space_id>", ADMIN, update_space, "Rename, change settings"),
    Route("DELETE", "/api/v1/spaces/<space_id>", ADMIN, delete_space, "Delete a space", 204),
    Route("POST", f"{S}/tokens", ADMIN, create_token, "Create a key (shown once)", 201),
    Route("GET", f"{S}/tokens", ADMIN, list_tokens, "List keys (prefixes only)"),
    Route("DELETE", f"{S}/tokens/<token_id>", ADMIN, revoke_token, "Revoke a key", 204),
    Route("GET", "/healthz", PUBLIC, healthz, "Liveness"),
    Route("GET", "/readyz", PUBLIC, readyz, "Readiness: store writable, spaces loaded"),
    Route("GET", "/metrics", METRICS, metrics, "Prometheus metrics (text format)"),
)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
