"""What the store keeps: rows for jobs, events, logs and callbacks (the records themselves
are the domain's), and `Changes`, one batch of writes. Rows are snapshots (tuples), taken
when the change is made, so the job can move on in memory while its earlier state is
being written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..codec import JSON, dumps, loads
from ..domain.model import Event, EventType, Job, JobStatus, LogLevel, RetryBackoff
from ..domain.records import Callback, LogLine, Space, Token

JOB_COLUMNS = (
    "id",
    "space_id",
    "seq",
    "name",
    "payload",
    "status",
    "priority",
    "max_retries",
    "attempt_number",
    "timeout_seconds",
    "scheduled_for",
    "callback_url",
    "callback_headers",
    "idempotency_key",
    "retry_backoff",
    "progress",
    "result",
    "checkpoint",
    "lease_id",
    "deadline",
    "event_seq",
    "log_seq",
    "created_at",
    "updated_at",
    "delivered_at",
    "started_at",
    "completed_at",
)
STATE_COLUMNS = (
    "status",
    "attempt_number",
    "scheduled_for",
    "progress",
    "result",
    "checkpoint",
    "lease_id",
    "deadline",
    "event_seq",
    "log_seq",
    "updated_at",
    "delivered_at",
    "started_at",
    "completed_at",
)
"""The columns a job's later changes touch; the payload is written once."""

JobRow = tuple[Any, ...]  # JOB_COLUMNS, then the job's new events as text (`event_record`)
StateRow = tuple[Any, ...]  # STATE_COLUMNS, the job's new events as text, then the id
EventRow = tuple[str, int, str, int, str | None, float]

INLINE_EVENTS = 32
INLINE_ENTRY = 600
"""A job's first events travel and are kept in its own row, as text (`event_record`): the
row is written at every change anyway, so an event there costs its bytes, where a row of
its own cost an index insert (about a fifth of the SQLite writer's time per job,
docs/persistence.md). Past `INLINE_EVENTS` events, or for an entry longer than
`INLINE_ENTRY` bytes, a row of its own (`event_row`) is cheaper than rewriting an
ever longer job row at each later change: so a job's row holds at most ~19 KB of events."""
LogRow = tuple[str, int, int, str, float, str | None]


_STATUS_TEXT = {status: status.value for status in JobStatus}
"""Plain strings to bind: sqlite3 binds a str subclass (the enum) through its adapter
lookup, about 0.8 µs a parameter, and ``.value`` is a slow property; a dict lookup is
neither."""


def _json_or_none(value: JSON) -> str | None:
    return None if value is None else dumps(value)


def job_row(job: Job, events: str = "") -> JobRow:
    return (
        job.id,
        job.space_id,
        job.seq,
        job.name,
        job.payload,
        _STATUS_TEXT[job.status],
        job.priority,
        job.max_retries,
        job.attempt_number,
        job.timeout_seconds,
        job.scheduled_for,
        job.callback_url,
        _json_or_none(job.callback_headers),  # type: ignore[arg-type]
        job.idempotency_key,
        None if job.retry_backoff is None else dumps(job.retry_backoff.to_wire()),
        _json_or_none(job.progress),
        job.result,
        job.checkpoint,
        job.lease_id,
        job.deadline,
        job.event_seq,
        job.log_seq,
        job.created_at,
        job.updated_at,
        job.delivered_at,
        job.started_at,
        job.completed_at,
        events,
    )


def state_row(job: Job, events: str = "") -> StateRow:
    return (
        _STATUS_TEXT[job.status],
        job.attempt_number,
        job.scheduled_for,
        _json_or_none(job.progress),
        job.result,
        job.checkpoint,
        job.lease_id,
        job.deadline,
        job.event_seq,
        job.log_seq,
        job.updated_at,
        job.delivered_at,
        job.started_at,
        job.completed_at,
        events,
        job.id,
    )


_STATUS = {status.value: status for status in JobStatus}


def job_from_row(row: JobRow, names: dict[str, str] | None = None) -> Job:
    """A job from its row. Recovery builds a million of these, so it assigns the slots
    directly rather than through keyword arguments, and ``names`` (a cache the caller
    keeps) makes jobs share one string per space id and job name."""
    (
        job_id, space_id, seq, name, payload, status, priority, max_retries, attempt,
        timeout, scheduled_for, callback_url, headers, idempotency_key, backoff, progress,
        result, checkpoint, lease_id, deadline, event_seq, log_seq, created_at, updated_at,
        delivered_at, started_at, completed_at,
    ) = row  # fmt: skip
    if names is not None:
        space_id = names.setdefault(space_id, space_id)
        name = names.setdefault(name, name)
    job = Job.__new__(Job)
    job.id = job_id
    job.space_id = space_id
    job.seq = seq
    job.name = name
    job.payload = payload
    job.status = _STATUS[status]
    job.priority = priority
    job.max_retries = max_retries
    job.attempt_number = attempt
    job.timeout_seconds = timeout
    job.scheduled_for = scheduled_for
    job.callback_url = callback_url
    job.callback_headers = None if headers is None else loads(headers)
    job.idempotency_key = idempotency_key
    job.retry_backoff = None
    if backoff is not None:
        spec = loads(backoff)
        job.retry_backoff = RetryBackoff(spec["initialSeconds"], spec["factor"], spec["maxSeconds"])
    job.progress = None if progress is None else loads(progress)
    job.result = result
    job.checkpoint = checkpoint
    job.lease_id = lease_id
    job.deadline = deadline
    job.event_seq = event_seq
    job.log_seq = log_seq
    job.created_at = created_at
    job.updated_at = updated_at
    job.delivered_at = delivered_at
    job.started_at = started_at
    job.completed_at = completed_at
    job.queue_token = 0
    job.in_queue = False
    job.timer_at = None
    return job


_EVENT_TEXT = {kind: kind.value for kind in EventType}
"""Plain strings, as for `_STATUS_TEXT` (and the writer's framing takes no enums)."""


def event_row(job_id: str, event: Event) -> EventRow:
    seq, kind, attempt, data, created_at = event
    # Event data is emit's own, or user values that passed `dumps` on the way in (the
    # NaN check): encode it without checking again.
    return (
        job_id,
        seq,
        _EVENT_TEXT[kind],
        attempt,
        None if data is None else orjson.dumps(data).decode(),
        created_at,
    )


def event_record(job_id: str, event: Event) -> str | EventRow:
    """How the event is written: as text for its job's row
    (``,[seq,"type",attempt,data,createdAt]``: a job's entries concatenate, and parse as
    one JSON array), or as a row of its own (`INLINE_EVENTS`, `INLINE_ENTRY`)."""
    seq, kind, attempt, data, created_at = event
    if seq > INLINE_EVENTS:
        return event_row(job_id, event)
    text = _EVENT_TEXT[kind]
    # The data is emit's own, or user values that passed `dumps` on the way in.
    entry = orjson.dumps((seq, text, attempt, data, created_at))
    if len(entry) <= INLINE_ENTRY:
        return "," + entry.decode()
    # Too long for the row: the data's JSON is already here, between the fields before
    # it (whose text is known) and the last comma (a float holds none).
    start = len(f'[{seq},"{text}",{attempt},')
    data_text = None if data is None else entry[start : entry.rindex(b",")].decode()
    return (job_id, seq, text, attempt, data_text, created_at)


def job_events(text: str, rows: list[EventRow]) -> list[Event]:
    """A job's history from its row's text (see `event_record`) and its rows of
    ``job_events`` (those past the row's share, and all of those written before schema
    3), in seq order."""
    events = [event_from_row(row) for row in rows]
    if not text:
        return events
    inline = [
        Event(seq, EventType(kind), attempt, data, created_at)
        for seq, kind, attempt, data, created_at in orjson.loads(f"[{text[1:]}]")
    ]
    return sorted(inline + events, key=_seq) if events else inline


def _seq(event: Event) -> int:
    return event.seq


def event_from_row(row: EventRow) -> Event:
    _, seq, kind, attempt, data, created_at = row
    return Event(seq, EventType(kind), attempt, None if data is None else loads(data), created_at)


def log_row(job_id: str, line: LogLine) -> LogRow:
    return (job_id, line.seq, int(line.level), line.message, line.ts, _json_or_none(line.fields))


def log_from_row(row: LogRow) -> LogLine:
    _, seq, level, message, ts, fields = row
    return LogLine(seq, LogLevel(level), message, ts, None if fields is None else loads(fields))


def callback_row(callback: Callback) -> tuple[Any, ...]:
    c = callback
    return (
        c.id, c.job_id, c.space_id, c.url, None if c.headers is None else dumps(c.headers),
        c.body, c.attempts, c.next_at, c.state, c.created_at, c.last_error,
    )  # fmt: skip


def callback_from_row(row: tuple[Any, ...]) -> Callback:
    values = list(row)
    values[4] = None if values[4] is None else loads(values[4])
    return Callback(*values)


@dataclass(slots=True)
class Changes:
    """One batch of writes, applied in one transaction with the batches around it."""

    inserts: list[JobRow] = field(default_factory=list)
    updates: list[StateRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    logs: list[LogRow] = field(default_factory=list)
    spaces: list[Space] = field(default_factory=list)
    deleted_spaces: list[str] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    revoked_tokens: list[tuple[str, float]] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    """Outbox rows to insert or replace."""

    def __bool__(self) -> bool:
        return bool(
            self.inserts
            or self.updates
            or self.events
            or self.logs
            or self.spaces
            or self.deleted_spaces
            or self.tokens
            or self.revoked_tokens
            or self.callbacks
        )
