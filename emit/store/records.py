"""What the store keeps: rows for jobs, events, logs and callbacks (the records themselves
are the domain's), and `Changes`, one batch of writes. Rows are snapshots (tuples), taken
when the change is made, so the job can move on in memory while its earlier state is
being written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..codec import JSON, dumps, loads
from ..domain import job
from ..domain.job import Codec, Job
from ..domain.model import Event, EventType, JobStatus, LogLevel, RetryBackoff
from ..domain.records import Callback, LogLine, Space, Token

JOB_COLUMNS = job.COLUMNS
STATE_COLUMNS = job.STATE
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


def _backoff_text(backoff: RetryBackoff | None) -> str | None:
    return None if backoff is None else dumps(backoff.to_wire())


def _backoff(text: str | None) -> RetryBackoff | None:
    if text is None:
        return None
    spec = loads(text)
    return RetryBackoff(spec["initialSeconds"], spec["factor"], spec["maxSeconds"])


_STATUS = {status.value: status for status in JobStatus}
_ENCODE = {
    Codec.PLAIN: "job.{}",
    Codec.STATUS: "_STATUS_TEXT[job.{}]",
    Codec.JSON: "_json_or_none(job.{})",
    Codec.BACKOFF: "None if job.{0} is None else _backoff_text(job.{0})",
}
_DECODE = {
    Codec.PLAIN: "{}",
    Codec.STATUS: "_STATUS[{}]",
    Codec.JSON: "None if {0} is None else _loads({0})",
    Codec.BACKOFF: "None if {0} is None else _backoff({0})",
}
_CODE = {
    "Job": Job,
    "_new": object.__new__,
    "_STATUS_TEXT": _STATUS_TEXT,
    "_STATUS": _STATUS,
    "_json_or_none": _json_or_none,
    "_loads": loads,
    "_backoff_text": _backoff_text,
    "_backoff": _backoff,
}


def _row_source(name: str, columns: tuple[str, ...], tail: str) -> str:
    values = "".join(f"        {_ENCODE[job.CODECS[c]].format(c)},\n" for c in columns)
    return f"def {name}(job, events=''):\n    return (\n{values}        {tail}\n    )\n"


def _from_row_source() -> str:
    lines = ["def job_from_row(row, names=None):", f"    ({', '.join(JOB_COLUMNS)},) = row"]
    lines.append("    if names is not None:")
    lines += [f"        {c} = names.setdefault({c}, {c})" for c in job.SHARED]
    lines.append("    job = _new(Job)")
    lines += [f"    job.{c} = {_DECODE[job.CODECS[c]].format(c)}" for c in JOB_COLUMNS]
    lines += [f"    job.{name} = {value!r}" for name, value in job.MEMORY.items()]
    lines.append("    return job")
    return "\n".join(lines) + "\n"


class _RowOf(Protocol):
    def __call__(self, job: Job, events: str = "", /) -> tuple[Any, ...]: ...


class _JobOf(Protocol):
    def __call__(self, row: JobRow, names: dict[str, str] | None = None, /) -> Job: ...


job_row: _RowOf = job.generate(
    "job_row", _row_source("job_row", JOB_COLUMNS, "events,"), dict(_CODE)
)
"""A new job's row: `JOB_COLUMNS`, then its events as text (`event_record`)."""
state_row: _RowOf = job.generate(
    "state_row", _row_source("state_row", STATE_COLUMNS, "events, job.id,"), dict(_CODE)
)
"""A job's changed state: `STATE_COLUMNS`, its new events as text, then its id."""
job_from_row: _JobOf = job.generate("job_from_row", _from_row_source(), dict(_CODE))
"""A job from its row. Recovery builds a million of these, so it assigns the slots
directly rather than through keyword arguments, and ``names`` (a cache the caller
keeps) makes jobs share one string per space id and job name."""


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


def space_row(space: Space) -> tuple[Any, ...]:
    return (space.id, space.name, space.public_token, space.created_at, dumps(space.settings))


def space_from_row(row: tuple[Any, ...]) -> Space:
    return Space(row[0], row[1], row[2], row[3], loads(row[4]))


def token_row(token: Token) -> tuple[Any, ...]:
    return (
        token.id,
        token.space_id,
        token.name,
        token.prefix,
        token.key_hash,
        dumps(sorted(token.scopes)),
        token.created_at,
        token.revoked_at,
        int(token.public),
        token.last_used_at,
    )


def token_from_row(row: tuple[Any, ...]) -> Token:
    return Token(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        frozenset(loads(row[5])),
        row[6],
        row[7],
        bool(row[8]),
        row[9],
    )


def jobs_where(
    space_id: str, status: JobStatus | None, name: str | None, mark: str
) -> tuple[str, list[Any]]:
    """The ``WHERE`` of a listing of a space's jobs (`Store.list_jobs`), with ``mark`` for
    each parameter (``?`` for SQLite, ``%s`` for PostgreSQL), and its parameters."""
    where = f"space_id = {mark}"
    params: list[Any] = [space_id]
    if status is not None:
        where += f" AND status = {mark}"
        params.append(status.value)
    if name is not None:
        where += f" AND name = {mark}"
        params.append(name)
    return where, params


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
    token_uses: list[tuple[str, float]] = field(default_factory=list)
    """(token id, when it was last used): the later of it and the stored one is kept."""
    callbacks: list[Callback] = field(default_factory=list)
    """Outbox rows to insert or replace."""
    deleted_jobs: list[str] = field(default_factory=list)
    """Finished jobs to delete, with their events, logs and callbacks (the sweep)."""
    reclaim_pages: int = 0
    """Free pages to give back to the file system after the deletes, at most (SQLite's
    ``incremental_vacuum``; nothing on a database made without it)."""
    fence: tuple[str, int] | None = None
    """(space id, epoch): the space whose writes these are, and the epoch at which this
    node owns it. A store shared by nodes commits them only while this node still holds
    the space at that epoch, checked inside the transaction (`base.Fenced`); None for
    writes of no one space, and wherever one node owns every space."""

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
            or self.token_uses
            or self.callbacks
            or self.deleted_jobs
        )
