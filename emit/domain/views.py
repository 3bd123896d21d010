"""What callers get back: snapshots of a job, a delivery, a space, a token.

Snapshots are taken inside the space actor when the answer is made, so they show the
state the caller's own change produced, however the job moves on afterwards. Each view
renders itself for the wire with camelCase names and ISO times.

Views are read-only by contract. The two made for every job (`JobView`, `Delivery`) are
plain slotted dataclasses, not ``frozen`` ones: a frozen dataclass sets each of its
fields through ``object.__setattr__``, which made building a 21-field view cost about
3.5 µs, twice per job.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from orjson import Fragment

from ..codec import JSON, loads
from ..isotime import iso
from .job import Job
from .model import Event, JobStatus
from .records import LogLine, Space, Token

REDACTED = "[redacted]"
"""What a read shows for each value of a job's ``callbackHeaders``: they usually carry the
receiver's secret (``Authorization``), and any key with ``jobs:read`` reads the job,
workers included. Only the callback sender, which reads the outbox, sees the values."""


def _loads(text: str | None) -> Any:
    return None if text is None else loads(text)


def _fragment(text: str | None) -> Fragment | None:
    return None if text is None else Fragment(text)


@dataclass(slots=True)
class JobView:
    id: str
    space_id: str
    name: str
    payload_json: str
    status: JobStatus
    priority: int
    max_retries: int
    attempt_number: int
    timeout_seconds: int
    scheduled_for: float | None
    callback_url: str | None
    callback_headers: dict[str, str] | None
    """The names the job's callback sends, each with the value `REDACTED`."""
    idempotency_key: str | None
    progress: JSON
    result_json: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None
    started_at: float | None
    completed_at: float | None
    events: tuple[Event, ...] | None = None

    @classmethod
    def of(cls, job: Job, events: list[Event] | None = None) -> JobView:
        view = cls(*_JOB_FIELDS(job))
        if view.callback_headers is not None:
            view.callback_headers = dict.fromkeys(view.callback_headers, REDACTED)
        if events is not None:
            view.events = tuple(events)
        return view

    @property
    def payload(self) -> Any:
        return loads(self.payload_json)

    @property
    def result(self) -> Any:
        return _loads(self.result_json)

    def to_wire(self, *, encoded: bool = False) -> dict[str, Any]:
        """The wire form (spec §4). ``encoded``: the payload and result as the stored JSON
        text in `orjson.Fragment`s, for a body that orjson encodes (the HTTP API), so they
        are copied into it rather than parsed and encoded again."""
        wire: dict[str, Any] = {
            "id": self.id,
            "spaceId": self.space_id,
            "name": self.name,
            "payload": Fragment(self.payload_json) if encoded else self.payload,
            "status": self.status.value,
            "priority": self.priority,
            "maxRetries": self.max_retries,
            "attemptNumber": self.attempt_number,
            "timeoutSeconds": self.timeout_seconds,
            "scheduledFor": iso(self.scheduled_for),
            "callbackUrl": self.callback_url,
            "callbackHeaders": self.callback_headers,
            "idempotencyKey": self.idempotency_key,
            "progress": self.progress,
            "result": _fragment(self.result_json) if encoded else self.result,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "deliveredAt": iso(self.delivered_at),
            "startedAt": iso(self.started_at),
            "completedAt": iso(self.completed_at),
        }
        if self.events is not None:
            wire["events"] = [event_to_wire(event) for event in self.events]
        return wire


_STORED_AS = {"payload_json": "payload", "result_json": "result", "checkpoint_json": "checkpoint"}
"""The view fields that hold the job's JSON text under another name."""


def snapshot(view: type[Any], *skip: str) -> attrgetter[tuple[Any, ...]]:
    """The job's attributes in ``view``'s field order (its fields named as the job's, but
    `_STORED_AS`): one C call takes the snapshot, and the view is built from it
    positionally (a third of the cost of 20 keyword arguments). Derived from the view's
    own fields, so the two cannot fall out of step."""
    names = [_STORED_AS.get(f.name, f.name) for f in fields(view) if f.name not in skip]
    return attrgetter(*names)


def event_to_wire(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "type": event.type.value,
        "attemptNumber": event.attempt_number,
        "data": event.data,
        "createdAt": iso(event.created_at),
    }


@dataclass(slots=True)
class Delivery:
    """The poll descriptor: what a worker needs to run one attempt."""

    id: str
    name: str
    payload_json: str
    priority: int
    timeout_seconds: int
    max_retries: int
    attempt_number: int
    created_at: float
    lease_id: str
    checkpoint_json: str | None

    @classmethod
    def of(cls, job: Job) -> Delivery:
        assert job.lease_id is not None
        return cls(*_DELIVERY_FIELDS(job))

    @property
    def payload(self) -> Any:
        return loads(self.payload_json)

    @property
    def checkpoint(self) -> Any:
        return _loads(self.checkpoint_json)

    def to_wire(self, *, encoded: bool = False) -> dict[str, Any]:
        """The wire form (spec §4); ``encoded`` as for `JobView.to_wire`."""
        return {
            "id": self.id,
            "name": self.name,
            "payload": Fragment(self.payload_json) if encoded else self.payload,
            "priority": self.priority,
            "timeoutSeconds": self.timeout_seconds,
            "maxRetries": self.max_retries,
            "attemptNumber": self.attempt_number,
            "createdAt": iso(self.created_at),
            "leaseId": self.lease_id,
            "checkpoint": _fragment(self.checkpoint_json) if encoded else self.checkpoint,
        }


_JOB_FIELDS = snapshot(JobView, "events")
_DELIVERY_FIELDS = snapshot(Delivery)


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item of a batch complete or fail."""

    id: str
    status: int
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.error is not None:
            wire["error"] = self.error
        return wire


def log_to_wire(line: LogLine) -> dict[str, Any]:
    return {
        "seq": line.seq,
        "level": line.level.name.lower(),
        "message": line.message,
        "ts": iso(line.ts),
        "fields": line.fields,
    }


def space_to_wire(space: Space, *, settings: bool = False) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": space.id,
        "name": space.name,
        "publicToken": space.public_token,
        "createdAt": iso(space.created_at),
    }
    if settings:
        wire["settings"] = space.settings
    return wire


def token_to_wire(token: Token) -> dict[str, Any]:
    """A token as listed: never the key, which is not kept."""
    return {
        "id": token.id,
        "name": token.name,
        "scopes": sorted(token.scopes),
        "prefix": token.prefix,
        "public": token.public,
        "createdAt": iso(token.created_at),
        "revokedAt": iso(token.revoked_at),
        "lastUsedAt": iso(token.last_used_at),
    }
