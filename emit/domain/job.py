"""The job's one shape: the `Job` class, whose fields (in order, with what the store does
with each) are the single source of everything that lists a job's attributes.

The store's columns and rows (`emit.store.records`), a new job made from a request
(`create_job`), a job read back from its row, and the views' snapshots (`emit.domain.views`) are
all derived from ``fields(Job)`` when their modules are imported: a field added here
reaches all of them, and a test holds them to it. The derived builders are generated
code, as the dataclass machinery itself does, so they cost what hand-written ones did.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..codec import JSON
from .model import JobStatus, NewJob, RetryBackoff


class Stored(enum.Enum):
    """What the store does with a field."""

    ONCE = "once"
    """A column written when the job is created and never changed."""
    STATE = "state"
    """A column written again at each change of the job (the ``UPDATE``)."""
    MEMORY = "memory"
    """Not stored: the live job's place in the space's queue and timer heap."""


class Codec(enum.Enum):
    """How a stored field is encoded in its column (the store maps each to code)."""

    PLAIN = "plain"
    STATUS = "status"  # JobStatus <-> its text
    JSON = "json"  # a JSON value or None <-> its text or NULL
    BACKOFF = "backoff"  # RetryBackoff or None <-> its wire JSON text or NULL


def _column(
    stored: Stored = Stored.ONCE,
    codec: Codec = Codec.PLAIN,
    *,
    default: Any = MISSING,
    shared: bool = False,
) -> Any:
    """A field of `Job`. ``shared``: the same few strings recur in every job of a space
    (its id, the job names), so a load makes jobs share one string each."""
    metadata = {"stored": stored, "codec": codec, "shared": shared}
    return field(default=default, metadata=metadata)


def _memory(default: Any) -> Any:
    return field(default=default, init=False, metadata={"stored": Stored.MEMORY})


@dataclass(slots=True, kw_only=True, eq=False, repr=False)
class Job:
    """One job's live state. The space actor owns it; the store keeps its log.

    Field order is column order. ``Job(...)`` takes every stored field by keyword (tests
    and tools use it); the engine builds jobs with `create_job` and the store's
    ``job_from_row``, which assign the slots directly."""

    id: str = _column()
    space_id: str = _column(shared=True)
    seq: int = _column()
    """Creation order within the space: ties in priority go to the oldest."""
    name: str = _column(shared=True)
    payload: str = _column()
    """Encoded JSON text."""
    status: JobStatus = _column(Stored.STATE, Codec.STATUS)
    priority: int = _column()
    max_retries: int = _column()
    attempt_number: int = _column(Stored.STATE, default=0)
    timeout_seconds: int = _column()
    scheduled_for: float | None = _column(Stored.STATE, default=None)
    callback_url: str | None = _column(default=None)
    callback_headers: dict[str, str] | None = _column(codec=Codec.JSON, default=None)
    idempotency_key: str | None = _column(default=None)
    retry_backoff: RetryBackoff | None = _column(codec=Codec.BACKOFF, default=None)
    progress: JSON = _column(Stored.STATE, Codec.JSON, default=None)
    result: str | None = _column(Stored.STATE, default=None)
    """Encoded JSON text, set when the job ends."""
    checkpoint: str | None = _column(Stored.STATE, default=None)
    """Encoded JSON text handed to later attempts."""
    lease_id: str | None = _column(Stored.STATE, default=None)
    deadline: float | None = _column(Stored.STATE, default=None)
    """When the job must next move: scheduled → due; delivered → ack deadline;
    running → run deadline. None in other states."""
    event_seq: int = _column(Stored.STATE, default=0)
    log_seq: int = _column(Stored.STATE, default=0)
    created_at: float = _column()
    updated_at: float = _column(Stored.STATE)
    delivered_at: float | None = _column(Stored.STATE, default=None)
    started_at: float | None = _column(Stored.STATE, default=None)
    completed_at: float | None = _column(Stored.STATE, default=None)
    queue_token: int = _memory(0)
    """Bumped whenever the job is queued, so stale queue entries can be told apart."""
    in_queue: bool = _memory(False)
    timer_at: float | None = _memory(None)
    """The time of this job's live entry in the timer heap, if any."""

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} {self.status}>"


FIELDS = fields(Job)
COLUMNS = tuple(f.name for f in FIELDS if f.metadata["stored"] is not Stored.MEMORY)
"""The stored fields, in column order."""
STATE = tuple(f.name for f in FIELDS if f.metadata["stored"] is Stored.STATE)
"""The fields a job's later changes touch; the others are written once."""
MEMORY = {f.name: f.default for f in FIELDS if f.metadata["stored"] is Stored.MEMORY}
"""The live job's bookkeeping, and its value in a job just made or loaded."""
CODECS = {f.name: f.metadata["codec"] for f in FIELDS if f.name in COLUMNS}
SHARED = tuple(f.name for f in FIELDS if f.metadata.get("shared"))
DEFAULTS = {f.name: f.default for f in FIELDS if f.default is not MISSING}


def generate(name: str, source: str, namespace: dict[str, Any]) -> Any:
    """Compile the generated function ``name`` from ``source`` in ``namespace``."""
    exec(compile(source, f"<generated {name}>", "exec"), namespace)
    return namespace[name]


_FROM_REQUEST = {
    "id": "job_id",
    "space_id": "space_id",
    "seq": "seq",
    "status": "_SCHEDULED if new.scheduled_for else _PENDING",
    "deadline": "new.scheduled_for",
    "created_at": "now",
    "updated_at": "now",
}
"""The fields of a new job that neither the request nor the defaults give."""


def _create_source() -> str:
    requested = {f.name for f in fields(NewJob)}
    lines = ["def create_job(job_id, space_id, seq, new, now):", "    job = _new(Job)"]
    for f in FIELDS:
        if f.name in _FROM_REQUEST:
            value = _FROM_REQUEST[f.name]
        elif f.name in requested:
            value = f"new.{f.name}"
        else:  # None, 0 or False: a literal, no lookup
            assert f.default is None or type(f.default) in (int, bool), f.name
            value = repr(f.default)
        lines.append(f"    job.{f.name} = {value}")
    lines.append("    return job")
    return "\n".join(lines) + "\n"


create_job: Callable[[str, str, int, NewJob, float], Job] = generate(
    "create_job",
    _create_source(),
    {
        "Job": Job,
        "_new": object.__new__,
        "_SCHEDULED": JobStatus.SCHEDULED,
        "_PENDING": JobStatus.PENDING,
    },
)
"""A job just made from a validated request: what ``Job(...)`` with the request's fields
gives, for a third of the cost (assigning the slots directly skips a keyword call of some
twenty arguments, once per job created)."""
