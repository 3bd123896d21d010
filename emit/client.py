"""The Python client of emit's HTTP API: `Client` (blocking, on ``httpx.Client``) and
`AsyncClient` (on ``httpx.AsyncClient``: trio, or asyncio).

Their methods and keywords are `SpaceJobs`'s, so a program moves between an embedded
runtime and a remote server by changing the line that makes ``jobs``. They answer with the
same views the embedding API returns (`JobView`, `Delivery`, `LogLine`; times as epoch
seconds) and raise the same errors (`emit.errors`), built from the wire's answers.

Each method is written once, as a `_Call`: the request to send, whether it may be sent
again, and how to read the answer. The two clients only differ in how they send it.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import random
import time
import types
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

import anyio
import httpx
import sniffio
import trio
import trio_websocket

from .codec import dumps, loads
from .domain.model import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT_SECONDS,
    Event,
    EventType,
    JobStatus,
    LogLevel,
)
from .domain.records import LogLine, Space, Token
from .domain.views import Delivery, ItemResult, JobView
from .errors import (
    Conflict,
    EmitError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .isotime import parse_iso
from .registry import NewToken

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
BACKOFF_BASE = 0.5
"""Seconds before the first retry when the server names no ``Retry-After``; doubled each
time, at most `BACKOFF_MAX`."""
BACKOFF_MAX = 30.0
UNKNOWN_OUTCOME = "may or may not"
"""What a 503 says when the change may still have been made (the spec's "outcome
unknown"): such a request is sent again only when that is safe."""


# ------------------------------------------------------------------------- the wire


def _time(text: str | None) -> float | None:
    return None if text is None else parse_iso(text)


def _json_text(value: Any) -> str | None:
    return None if value is None else dumps(value)


def job_from_wire(wire: Mapping[str, Any]) -> JobView:
    """A `JobView` from the wire form of a job (spec §4)."""
    events = wire.get("events")
    return JobView(
        id=wire["id"],
        space_id=wire["spaceId"],
        name=wire["name"],
        payload_json=dumps(wire.get("payload")),
        status=JobStatus(wire["status"]),
        priority=wire["priority"],
        max_retries=wire["maxRetries"],
        attempt_number=wire["attemptNumber"],
        timeout_seconds=wire["timeoutSeconds"],
        scheduled_for=_time(wire.get("scheduledFor")),
        callback_url=wire.get("callbackUrl"),
        callback_headers=wire.get("callbackHeaders"),
        idempotency_key=wire.get("idempotencyKey"),
        progress=wire.get("progress"),
        result_json=_json_text(wire.get("result")),
        created_at=parse_iso(wire["createdAt"]),
        updated_at=parse_iso(wire["updatedAt"]),
        delivered_at=_time(wire.get("deliveredAt")),
        started_at=_time(wire.get("startedAt")),
        completed_at=_time(wire.get("completedAt")),
        events=None
        if events is None
        else tuple(
            Event(
                e["seq"],
                EventType(e["type"]),
                e["attemptNumber"],
                e.get("data"),
                parse_iso(e["createdAt"]),
            )
            for e in events
        ),
    )


def delivery_from_wire(wire: Mapping[str, Any]) -> Delivery:
    """A `Delivery` from a poll or claim descriptor."""
    return Delivery(
        id=wire["id"],
        name=wire["name"],
        payload_json=dumps(wire.get("payload")),
        priority=wire["priority"],
        timeout_seconds=wire["timeoutSeconds"],
        max_retries=wire["maxRetries"],
        attempt_number=wire["attemptNumber"],
        created_at=parse_iso(wire["createdAt"]),
        lease_id=wire["leaseId"],
        checkpoint_json=_json_text(wire.get("checkpoint")),
    )


def _log_from_wire(wire: Mapping[str, Any]) -> LogLine:
    return LogLine(
        wire["seq"],
        LogLevel[wire["level"].upper()],
        wire["message"],
        parse_iso(wire["ts"]),
        wire.get("fields"),
    )


def _space_from_wire(wire: Mapping[str, Any]) -> Space:
    return Space(
        wire["id"],
        wire["name"],
        wire["publicToken"],
        parse_iso(wire["createdAt"]),
        dict(wire.get("settings") or {}),
    )


def _token_from_wire(space_id: str, wire: Mapping[str, Any]) -> Token:
    """A `Token` as listed; ``key_hash`` is empty: the wire never shows it."""
    return Token(
        wire["id"],
        space_id,
        wire["name"],
        wire["prefix"],
        "",
        frozenset(wire["scopes"]),
        parse_iso(wire["createdAt"]),
        _time(wire.get("revokedAt")),
        bool(wire.get("public")),
        _time(wire.get("lastUsedAt")),
    )


_ERRORS: dict[int, type[EmitError]] = {
    cls.status: cls
    for cls in (Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge, Unavailable)
}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: back off by our own rule


def error_from_response(response: httpx.Response) -> EmitError:
    """The `EmitError` a refused request stands for: its class by status (an
    `EmitError` for a status with none), carrying the answer's status, code, message and
    field."""
    status = response.status_code
    try:
        body = response.json()["error"]
        code, message, where = body.get("code"), body.get("message"), body.get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, where = None, None, None
    message = message if isinstance(message, str) else f"HTTP {status}: {response.text[:200]}"
    error: EmitError
    if status == 400:
        error = InvalidRequest(message, field=where if isinstance(where, str) else None)
    elif status == 429:
        error = RateLimited(message, retry_after=_retry_after(response) or 0.0)
    else:
        error = _ERRORS.get(status, EmitError)(message)
        if isinstance(where, str):
            error.field = where
    error.status = status
    if isinstance(code, str):
        error.code = code
    return error


def _item_outcome(item: Mapping[str, Any]) -> ItemResult | EmitError:
    status = item["status"]
    if status == 200:
        return ItemResult(item["id"], 200)
    error = _ERRORS.get(status, EmitError)(item.get("error") or f"HTTP {status}")
    error.status = status
    return error


# -------------------------------------------------------------------------- calls

_NO_BODY: Any = object()


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: Any = _NO_BODY
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    safe: bool = False
    """Sending it twice does no harm (a read, or a create with an idempotency key): it
    is sent again after a connection error or an uncertain 503."""
    wait: float = 0.0
    """A long poll's wait, added to the client's timeout."""


def _job(response: httpx.Response) -> JobView:
    return job_from_wire(response.json())


def _lease(lease_id: str | None) -> dict[str, str]:
    return {} if lease_id is None else {"leaseId": lease_id}


def _new_key() -> str:
    return uuid.uuid4().hex


class _Calls:
    """The calls of the API, shaped like `SpaceJobs`'s methods."""

    def __init__(self, space_id: str | None) -> None:
        self.space_id = space_id

    def _space(self) -> str:
        if self.space_id is None:
            raise ValueError("this call needs a space: pass space_id= or set EMIT_SPACE_ID")
        return f"/api/v1/spaces/{self.space_id}"

    def create(
        self,
        name: str,
        payload: Any,
        *,
        priority: int,
        max_retries: int,
        timeout_seconds: int,
        scheduled_for: str | None,
        callback_url: str | None,
        callback_headers: Mapping[str, str] | None,
        idempotency_key: str | None,
        retry_backoff: Mapping[str, float] | None,
        idempotent: bool,
    ) -> _Call[JobView]:
        if idempotent and idempotency_key is None:
            idempotency_key = _new_key()
        wire = {
            "name": name,
            "payload": payload,
            "priority": priority,
            "maxRetries": max_retries,
            "timeoutSeconds": timeout_seconds,
            "scheduledFor": scheduled_for,
            "callbackUrl": callback_url,
            "callbackHeaders": None if callback_headers is None else dict(callback_headers),
            "idempotencyKey": idempotency_key,
            "retryBackoff": None if retry_backoff is None else dict(retry_backoff),
        }
        return _Call("POST", f"{self._space()}/jobs", _job, wire, safe=idempotency_key is not None)

    def create_many(self, items: Sequence[Mapping[str, Any]]) -> _Call[list[JobView]]:
        body = [dict(item) for item in items]
        keyed = bool(body) and all(item.get("idempotencyKey") for item in body)
        return _Call(
            "POST",
            f"{self._space()}/jobs",
            lambda r: [job_from_wire(job) for job in r.json()],
            body,
            safe=keyed,
        )

    def poll(
        self, count: int, names: str | Sequence[str] | None, wait: float, ack: bool
    ) -> _Call[list[Delivery]]:
        body: dict[str, Any] = {"count": count, "wait": wait, "ack": ack}
        if names is not None:
            body["names"] = names if isinstance(names, str) else list(names)
        return _Call(
            "POST",
            f"{self._space()}/jobs/poll",
            lambda r: [delivery_from_wire(job) for job in r.json()["jobs"]],
            body,
            wait=float(wait),
        )

    def job_call(
        self,
        job_id: str,
        action: str,
        body: Any = _NO_BODY,
        *,
        headers: dict[str, str] | None = None,
    ) -> _Call[JobView]:
        return _Call("POST", f"/api/v1/jobs/{job_id}/{action}", _job, body, headers=headers or {})

    def claim(self, job_id: str) -> _Call[Delivery]:
        return _Call("POST", f"/api/v1/jobs/{job_id}/claim", lambda r: delivery_from_wire(r.json()))

    def log_lines(
        self, job_id: str, lines: Sequence[Mapping[str, Any]], lease_id: str | None
    ) -> _Call[int]:
        headers = {} if lease_id is None else {"x-emit-lease": lease_id}
        return _Call(
            "POST",
            f"/api/v1/jobs/{job_id}/logs",
            lambda r: int(r.json()["accepted"]),
            [dict(line) for line in lines],
            headers=headers,
        )

    def batch(
        self, action: str, items: Sequence[Mapping[str, Any]]
    ) -> _Call[list[ItemResult | EmitError]]:
        return _Call(
            "POST",
            f"{self._space()}/jobs/{action}",
            lambda r: [_item_outcome(item) for item in r.json()["results"]],
            {"jobs": [dict(item) for item in items]},
        )

    def get(self, job_id: str) -> _Call[JobView]:
        return _Call("GET", f"/api/v1/jobs/{job_id}", _job, safe=True)

    def counts(self) -> _Call[dict[JobStatus, int]]:
        return _Call(
            "GET",
            f"{self._space()}/stats",
            lambda r: {JobStatus(s): n for s, n in r.json()["counts"].items()},
            safe=True,
        )

    def logs(
        self, job_id: str, after: int, limit: int, level: str | None, q: str | None
    ) -> _Call[list[LogLine]]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if level is not None:
            params["level"] = level
        if q is not None:
            params["q"] = q
        return _Call(
            "GET",
            f"/api/v1/jobs/{job_id}/logs",
            lambda r: [_log_from_wire(line) for line in r.json()["logs"]],
            params=params,
            safe=True,
        )

    # management (the admin key)

    def create_space(self, name: str) -> _Call[Space]:
        return _Call("POST", "/api/v1/spaces", lambda r: _space_from_wire(r.json()), {"name": name})

    def list_spaces(self) -> _Call[builtins.list[Space]]:
        return _Call(
            "GET", "/api/v1/spaces", lambda r: [_space_from_wire(s) for s in r.json()], safe=True
        )

    def get_space(self, space_id: str) -> _Call[Space]:
        return _Call(
            "GET", f"/api/v1/spaces/{space_id}", lambda r: _space_from_wire(r.json()), safe=True
        )

    def update_space(self, space_id: str, settings: Mapping[str, Any]) -> _Call[Space]:
        return _Call(
            "PATCH",
            f"/api/v1/spaces/{space_id}",
            lambda r: _space_from_wire(r.json()),
            dict(settings),
            safe=True,  # setting the same values again changes nothing
        )

    def delete_space(self, space_id: str) -> _Call[None]:
        return _Call("DELETE", f"/api/v1/spaces/{space_id}", lambda r: None)

    def create_token(
        self, space_id: str, name: str, scopes: Sequence[str] | None, preset: str | None
    ) -> _Call[NewToken]:
        body: dict[str, Any] = {"name": name}
        if scopes is not None:
            body["scopes"] = list(scopes)
        if preset is not None:
            body["preset"] = preset

        def read(r: httpx.Response) -> NewToken:
            wire = r.json()
            return NewToken(
                wire["id"],
                space_id,
                wire["name"],
                frozenset(wire["scopes"]),
                wire["key"],
                parse_iso(wire["createdAt"]),
            )

        return _Call("POST", f"/api/v1/spaces/{space_id}/tokens", read, body)

    def list_tokens(self, space_id: str) -> _Call[builtins.list[Token]]:
        return _Call(
            "GET",
            f"/api/v1/spaces/{space_id}/tokens",
            lambda r: [_token_from_wire(space_id, t) for t in r.json()],
            safe=True,
        )

    def revoke_token(self, space_id: str, token_id: str) -> _Call[None]:
        return _Call(
            "DELETE", f"/api/v1/spaces/{space_id}/tokens/{token_id}", lambda r: None, safe=True
        )

    def list(
        self, status: str | None, name: str | None, limit: int, offset: int
    ) -> _Call[tuple[builtins.list[JobView], int]]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        if name is not None:
            params["name"] = name

        def read(r: httpx.Response) -> tuple[builtins.list[JobView], int]:
            jobs = [job_from_wire(job) for job in r.json()]
            return jobs, int(r.headers.get("x-total-count", len(jobs)))

        return _Call("GET", f"{self._space()}/jobs", read, params=params, safe=True)


# ---------------------------------------------------------------------- waiting

FINAL = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.KILLED})
WAIT_READ_FIRST = 0.05
"""Seconds between reads when `wait` falls back to reading the job: this at first, half
as long again each time, at most `WAIT_READ_MAX`."""
WAIT_READ_MAX = 2.0


async def _follow(url: str) -> None:
    """Follow a job stream (trio) until it shows the job final, or ends, or fails."""
    try:
        async with trio_websocket.open_websocket_url(url) as ws:
            while True:
                message = loads(await ws.get_message())
                if message.get("status") in ("completed", "dead", "killed"):
                    return
    except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError, ValueError):
        return  # the caller reads the job: that says whether it is final, or why not


def _follow_sync(url: str, timeout: float | None) -> None:
    async def follow() -> None:
        with trio.move_on_after(float("inf") if timeout is None else timeout):
            await _follow(url)

    # RuntimeError: called inside a running trio loop, where a blocking client does not
    # belong; then the job is read instead.
    with contextlib.suppress(RuntimeError):
        trio.run(follow)


# ----------------------------------------------------------------------- settings


def _settings(
    url: str | None, api_key: str | None, space_id: str | None
) -> tuple[str, str | None, str | None]:
    """The explicit arguments, else the environment: ``EMIT_URL``, ``EMIT_SPACE_ID``, and
    the key from ``EMIT_PRODUCER_KEY``, else ``EMIT_WORKER_KEY``."""
    url = url or os.environ.get("EMIT_URL")
    if not url:
        raise ValueError("no emit server URL: pass url= or set EMIT_URL")
    if api_key is None:
        api_key = os.environ.get("EMIT_PRODUCER_KEY") or os.environ.get("EMIT_WORKER_KEY")
    if space_id is None:
        space_id = os.environ.get("EMIT_SPACE_ID") or None
    return url.rstrip("/"), api_key, space_id


def jittered_backoff(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1`` of a run of failures (0-based): `BACKOFF_BASE`
    doubled each time, at most `BACKOFF_MAX`, jittered to between half and all of that so
    that clients refused together do not come back together."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2.0**attempt) * random.uniform(0.5, 1.0)


class _Retrying:
    """When to send a request again, and how long to wait first."""

    def __init__(self, retries: int) -> None:
        self.retries = retries

    def delay(
        self, attempt: int, response: httpx.Response | None, call: _Call[Any]
    ) -> float | None:
        """Seconds to wait before sending ``call`` again after ``attempt`` (0-based) got
        ``response`` (None: a connection error); None: do not."""
        if attempt >= self.retries:
            return None
        if response is None:
            return jittered_backoff(attempt) if call.safe else None
        status = response.status_code
        if status == 503 and not call.safe and UNKNOWN_OUTCOME in response.text:
            return None
        if status in (502, 504) and call.safe:
            # A proxy's, while the server behind it restarts: whether a change got
            # through is unknown, so only what is safe to repeat is sent again.
            return jittered_backoff(attempt)
        if status not in (429, 503):
            return None
        after = _retry_after(response)
        if after is None:
            return jittered_backoff(attempt)
        return after + random.uniform(0, min(1.0, after / 4 + 0.1))  # never before it


class _Base:
    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        space_id: str | None,
        timeout: float,
        retries: int,
    ) -> None:
        self.url, self.api_key, space_id = _settings(url, api_key, space_id)
        self.timeout = timeout
        self._calls = _Calls(space_id)
        self._retrying = _Retrying(retries)

    @property
    def space_id(self) -> str | None:
        return self._calls.space_id

    def _stream_url(self, job_id: str) -> str:
        base = "ws" + self.url.removeprefix("http")  # http -> ws, https -> wss
        return f"{base}/api/v1/realtime/{job_id}?token={self.api_key or ''}"

    def _headers(self) -> dict[str, str]:
        return {} if self.api_key is None else {"x-api-key": self.api_key}

    def _request(self, call: _Call[Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": call.headers, "params": call.params}
        if call.body is not _NO_BODY:
            kwargs["json"] = call.body
        if call.wait:
            kwargs["timeout"] = self.timeout + call.wait
        return kwargs

    @staticmethod
    def _answer(call: _Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise error_from_response(response)
        return call.read(response)


class Client(_Base):
    """A blocking client of one emit server, for one space (see docs/client.md)."""

    _sleep = staticmethod(time.sleep)
    _monotonic = staticmethod(time.monotonic)
    """A blocking program's clock and sleep (no trio clock runs there): tests replace
    both, as they replace trio's clock for the async client."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        space_id: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, space_id, timeout, retries)
        self._http = httpx.Client(
            base_url=self.url, headers=self._headers(), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **self._request(call))
            except httpx.TransportError:
                delay = self._retrying.delay(attempt, None, call)
                if delay is None:
                    raise
            else:
                delay = self._retrying.delay(attempt, response, call)
                if delay is None:
                    return self._answer(call, response)
            self._sleep(delay)
            attempt += 1

    # producers

    def create(
        self,
        name: str,
        payload: Any = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        scheduled_for: str | None = None,
        callback_url: str | None = None,
        callback_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry_backoff: Mapping[str, float] | None = None,
        idempotent: bool = False,
    ) -> JobView:
        return self._run(
            self._calls.create(
                name,
                payload,
                priority=priority,
                max_retries=max_retries,
                timeout_seconds=timeout_seconds,
                scheduled_for=scheduled_for,
                callback_url=callback_url,
                callback_headers=callback_headers,
                idempotency_key=idempotency_key,
                retry_backoff=retry_backoff,
                idempotent=idempotent,
            )
        )

    def create_many(self, items: Sequence[Mapping[str, Any]]) -> list[JobView]:
        return self._run(self._calls.create_many(items))

    def kill(self, job_id: str, reason: str | None = None) -> JobView:
        body = {} if reason is None else {"reason": reason}
        return self._run(self._calls.job_call(job_id, "kill", body))

    def retry(self, job_id: str) -> JobView:
        return self._run(self._calls.job_call(job_id, "retry"))

    # workers

    def poll(
        self,
        count: int = 1,
        *,
        names: str | Sequence[str] | None = None,
        wait: float = 0,
        ack: bool = False,
    ) -> list[Delivery]:
        return self._run(self._calls.poll(count, names, wait, ack))

    def claim(self, job_id: str) -> Delivery:
        return self._run(self._calls.claim(job_id))

    def ack(self, job_id: str, *, lease_id: str | None = None) -> JobView:
        return self._run(self._calls.job_call(job_id, "ack", _lease(lease_id)))

    def progress(
        self,
        job_id: str,
        percent: float,
        message: str,
        *,
        sub_progress: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> JobView:
        body = {"percent": percent, "message": message, "subProgress": sub_progress}
        return self._run(self._calls.job_call(job_id, "progress", body | _lease(lease_id)))

    def checkpoint(
        self, job_id: str, state: Mapping[str, Any], *, lease_id: str | None = None
    ) -> JobView:
        return self._run(self._calls.job_call(job_id, "checkpoint", dict(state) | _lease(lease_id)))

    def event(
        self, job_id: str, type: str, data: Any = None, *, lease_id: str | None = None
    ) -> JobView:
        body = {"type": type, "data": data} | _lease(lease_id)
        return self._run(self._calls.job_call(job_id, "event", body))

    def log(
        self,
        job_id: str,
        level: str,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> int:
        line = {"level": level, "message": message, "fields": fields}
        return self.log_lines(job_id, [line], lease_id=lease_id)

    def log_lines(
        self, job_id: str, lines: Sequence[Mapping[str, Any]], *, lease_id: str | None = None
    ) -> int:
        return self._run(self._calls.log_lines(job_id, lines, lease_id))

    def keepalive(
        self, job_id: str, *, seconds: int | None = None, lease_id: str | None = None
    ) -> JobView:
        body = ({} if seconds is None else {"seconds": seconds}) | _lease(lease_id)
        return self._run(self._calls.job_call(job_id, "keepalive", body))

    def complete(self, job_id: str, result: Any = None, *, lease_id: str | None = None) -> JobView:
        body = {"result": result} | _lease(lease_id)
        return self._run(self._calls.job_call(job_id, "complete", body))

    def complete_many(self, items: Sequence[Mapping[str, Any]]) -> list[ItemResult | EmitError]:
        return self._run(self._calls.batch("complete", items))

    def fail(self, job_id: str, error: str, *, lease_id: str | None = None) -> JobView:
        body = {"error": error} | _lease(lease_id)
        return self._run(self._calls.job_call(job_id, "fail", body))

    def fail_many(self, items: Sequence[Mapping[str, Any]]) -> list[ItemResult | EmitError]:
        return self._run(self._calls.batch("fail", items))

    # readers

    def get(self, job_id: str) -> JobView:
        return self._run(self._calls.get(job_id))

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobView:
        """The job once it is final (completed, dead or killed): follows its WebSocket
        stream, then reads it (reading it again and again if the stream fails).
        `TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else self._monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - self._monotonic())

        job = self.get(job_id)
        if job.status not in FINAL:
            _follow_sync(self._stream_url(job_id), left())
        pause = WAIT_READ_FIRST
        while job.status not in FINAL:
            job = self.get(job_id)
            if job.status in FINAL:
                break
            remaining = left()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {job_id} is still {job.status.value}")
            self._sleep(pause if remaining is None else min(pause, remaining))
            pause = min(WAIT_READ_MAX, pause * 1.5)
        return job

    def counts(self) -> dict[JobStatus, int]:
        return self._run(self._calls.counts())

    def logs(
        self,
        job_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        level: str | None = None,
        q: str | None = None,
    ) -> list[LogLine]:
        return self._run(self._calls.logs(job_id, after, limit, level, q))

    # management (the admin key): `Runtime`'s methods

    def create_space(self, name: str) -> Space:
        return self._run(self._calls.create_space(name))

    def list_spaces(self) -> list[Space]:
        return self._run(self._calls.list_spaces())

    def get_space(self, space_id: str) -> Space:
        return self._run(self._calls.get_space(space_id))

    def update_space(self, space_id: str, settings: Mapping[str, Any]) -> Space:
        return self._run(self._calls.update_space(space_id, settings))

    def delete_space(self, space_id: str) -> None:
        self._run(self._calls.delete_space(space_id))

    def create_token(
        self,
        space_id: str,
        *,
        name: str,
        scopes: Sequence[str] | None = None,
        preset: str | None = None,
    ) -> NewToken:
        return self._run(self._calls.create_token(space_id, name, scopes, preset))

    def list_tokens(self, space_id: str) -> list[Token]:
        return self._run(self._calls.list_tokens(space_id))

    def revoke_token(self, space_id: str, token_id: str) -> None:
        self._run(self._calls.revoke_token(space_id, token_id))

    # Last in the class: below this line `list` would name the method, not the type.
    def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[JobView], int]:
        return self._run(self._calls.list(status, name, limit, offset))


class AsyncClient(_Base):
    """The same client for async code, on ``httpx.AsyncClient`` (see docs/client.md)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        space_id: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, space_id, timeout, retries)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers(), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, **self._request(call))
            except httpx.TransportError:
                delay = self._retrying.delay(attempt, None, call)
                if delay is None:
                    raise
            else:
                delay = self._retrying.delay(attempt, response, call)
                if delay is None:
                    return self._answer(call, response)
            await anyio.sleep(delay)
            attempt += 1

    # producers

    async def create(
        self,
        name: str,
        payload: Any = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        scheduled_for: str | None = None,
        callback_url: str | None = None,
        callback_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry_backoff: Mapping[str, float] | None = None,
        idempotent: bool = False,
    ) -> JobView:
        return await self._run(
            self._calls.create(
                name,
                payload,
                priority=priority,
                max_retries=max_retries,
                timeout_seconds=timeout_seconds,
                scheduled_for=scheduled_for,
                callback_url=callback_url,
                callback_headers=callback_headers,
                idempotency_key=idempotency_key,
                retry_backoff=retry_backoff,
                idempotent=idempotent,
            )
        )

    async def create_many(self, items: Sequence[Mapping[str, Any]]) -> list[JobView]:
        return await self._run(self._calls.create_many(items))

    async def kill(self, job_id: str, reason: str | None = None) -> JobView:
        body = {} if reason is None else {"reason": reason}
        return await self._run(self._calls.job_call(job_id, "kill", body))

    async def retry(self, job_id: str) -> JobView:
        return await self._run(self._calls.job_call(job_id, "retry"))

    # workers

    async def poll(
        self,
        count: int = 1,
        *,
        names: str | Sequence[str] | None = None,
        wait: float = 0,
        ack: bool = False,
    ) -> list[Delivery]:
        return await self._run(self._calls.poll(count, names, wait, ack))

    async def claim(self, job_id: str) -> Delivery:
        return await self._run(self._calls.claim(job_id))

    async def ack(self, job_id: str, *, lease_id: str | None = None) -> JobView:
        return await self._run(self._calls.job_call(job_id, "ack", _lease(lease_id)))

    async def progress(
        self,
        job_id: str,
        percent: float,
        message: str,
        *,
        sub_progress: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> JobView:
        body = {"percent": percent, "message": message, "subProgress": sub_progress}
        return await self._run(self._calls.job_call(job_id, "progress", body | _lease(lease_id)))

    async def checkpoint(
        self, job_id: str, state: Mapping[str, Any], *, lease_id: str | None = None
    ) -> JobView:
        body = dict(state) | _lease(lease_id)
        return await self._run(self._calls.job_call(job_id, "checkpoint", body))

    async def event(
        self, job_id: str, type: str, data: Any = None, *, lease_id: str | None = None
    ) -> JobView:
        body = {"type": type, "data": data} | _lease(lease_id)
        return await self._run(self._calls.job_call(job_id, "event", body))

    async def log(
        self,
        job_id: str,
        level: str,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> int:
        line = {"level": level, "message": message, "fields": fields}
        return await self.log_lines(job_id, [line], lease_id=lease_id)

    async def log_lines(
        self, job_id: str, lines: Sequence[Mapping[str, Any]], *, lease_id: str | None = None
    ) -> int:
        return await self._run(self._calls.log_lines(job_id, lines, lease_id))

    async def keepalive(
        self, job_id: str, *, seconds: int | None = None, lease_id: str | None = None
    ) -> JobView:
        body = ({} if seconds is None else {"seconds": seconds}) | _lease(lease_id)
        return await self._run(self._calls.job_call(job_id, "keepalive", body))

    async def complete(
        self, job_id: str, result: Any = None, *, lease_id: str | None = None
    ) -> JobView:
        body = {"result": result} | _lease(lease_id)
        return await self._run(self._calls.job_call(job_id, "complete", body))

    async def complete_many(
        self, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult | EmitError]:
        return await self._run(self._calls.batch("complete", items))

    async def fail(self, job_id: str, error: str, *, lease_id: str | None = None) -> JobView:
        body = {"error": error} | _lease(lease_id)
        return await self._run(self._calls.job_call(job_id, "fail", body))

    async def fail_many(self, items: Sequence[Mapping[str, Any]]) -> list[ItemResult | EmitError]:
        return await self._run(self._calls.batch("fail", items))

    # readers

    async def get(self, job_id: str) -> JobView:
        return await self._run(self._calls.get(job_id))

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobView:
        """The job once it is final (completed, dead or killed): follows its WebSocket
        stream under trio, then reads it (reading it again and again if the stream
        fails, or under asyncio). `TimeoutError` after ``timeout`` seconds."""
        with anyio.fail_after(timeout):
            job = await self.get(job_id)
            if job.status not in FINAL and sniffio.current_async_library() == "trio":
                await _follow(self._stream_url(job_id))
            pause = WAIT_READ_FIRST
            while job.status not in FINAL:
                job = await self.get(job_id)
                if job.status not in FINAL:
                    await anyio.sleep(pause)
                    pause = min(WAIT_READ_MAX, pause * 1.5)
            return job

    async def counts(self) -> dict[JobStatus, int]:
        return await self._run(self._calls.counts())

    async def logs(
        self,
        job_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        level: str | None = None,
        q: str | None = None,
    ) -> list[LogLine]:
        return await self._run(self._calls.logs(job_id, after, limit, level, q))

    # management (the admin key): `Runtime`'s methods

    async def create_space(self, name: str) -> Space:
        return await self._run(self._calls.create_space(name))

    async def list_spaces(self) -> list[Space]:
        return await self._run(self._calls.list_spaces())

    async def get_space(self, space_id: str) -> Space:
        return await self._run(self._calls.get_space(space_id))

    async def update_space(self, space_id: str, settings: Mapping[str, Any]) -> Space:
        return await self._run(self._calls.update_space(space_id, settings))

    async def delete_space(self, space_id: str) -> None:
        await self._run(self._calls.delete_space(space_id))

    async def create_token(
        self,
        space_id: str,
        *,
        name: str,
        scopes: Sequence[str] | None = None,
        preset: str | None = None,
    ) -> NewToken:
        return await self._run(self._calls.create_token(space_id, name, scopes, preset))

    async def list_tokens(self, space_id: str) -> list[Token]:
        return await self._run(self._calls.list_tokens(space_id))

    async def revoke_token(self, space_id: str, token_id: str) -> None:
        await self._run(self._calls.revoke_token(space_id, token_id))

    # Last in the class: below this line `list` would name the method, not the type.
    async def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[JobView], int]:
        return await self._run(self._calls.list(status, name, limit, offset))
