"""The commands a space understands, in the imperative, each a `Command` whose type
parameter is the answer. Inputs are validated before they are sent (see
`emit.domain.model`), so the space only applies rules that need its state. They are
plain data: the space actor receives them, and `emit.domain.space` applies them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from ..codec import JSON
from ..errors import EmitError
from .model import (
    EventType,
    JobStatus,
    LogLevel,
    NewJob,
    PollRequest,
    Progress,
)
from .records import Callback
from .settings import Retention, SpaceSettings
from .views import Delivery, JobView

R = TypeVar("R")


class Command(Generic[R]):
    """Base of the commands that are answered: ``R`` is the type of the answer."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class CreateJobs(Command[list[tuple[JobView, bool]]]):
    """Answer: each job, and False where an idempotency key returned an existing one."""

    jobs: list[NewJob]
    batch: bool = True
    """A batch (errors name the item's index) rather than one job."""


@dataclass(frozen=True, slots=True)
class PollJobs(Command[list[Delivery]]):
    request: PollRequest


@dataclass(frozen=True, slots=True)
class ClaimJob(Command[Delivery]):
    job_id: str


@dataclass(frozen=True, slots=True)
class AckJob(Command[JobView]):
    job_id: str
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class ReportProgress(Command[JobView]):
    job_id: str
    progress: Progress
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class SaveCheckpoint(Command[JobView]):
    job_id: str
    state: str
    data: JSON
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class RecordEvent(Command[JobView]):
    job_id: str
    type: str
    data: JSON
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class LogEntry:
    level: LogLevel
    message: str
    ts: float | None
    fields: JSON


@dataclass(frozen=True, slots=True)
class AppendLogs(Command[int]):
    job_id: str
    lines: list[LogEntry]
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class KeepAlive(Command[JobView]):
    job_id: str
    seconds: int | None
    lease_id: str | None


class CompleteItem(NamedTuple):
    job_id: str
    result: str
    """The result as JSON text."""
    data: JSON
    """The same result, decoded (for the events)."""
    lease_id: str | None


class FailItem(NamedTuple):
    job_id: str
    error: str
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class CompleteJobs(Command[list[JobView | EmitError]]):
    """Each item judged alone: the job as it now is, or the error that refused it."""

    items: list[CompleteItem]


@dataclass(frozen=True, slots=True)
class FailJobs(Command[list[JobView | EmitError]]):
    """Each item judged alone, as for `CompleteJobs`."""

    items: list[FailItem]


@dataclass(frozen=True, slots=True)
class KillJob(Command[JobView]):
    job_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class RetryJob(Command[JobView]):
    job_id: str


@dataclass(frozen=True, slots=True)
class CountJobs(Command[dict[JobStatus, int]]):
    pass


@dataclass(frozen=True, slots=True)
class StreamSnapshot(Command[tuple[dict[JobStatus, int], int]]):
    """For a space stream starting: the counts as of the last commit, and the seq of the
    space's stream at that same commit, so counts and stream messages never overlap."""


@dataclass(frozen=True, slots=True)
class ApplySettings(Command[None]):
    """The space's settings changed (they are already stored)."""

    settings: SpaceSettings


@dataclass(frozen=True, slots=True)
class RecordCallback(Command[None]):
    """A webhook try ended: note it in the job's history and save the outbox row, in one
    transaction."""

    job_id: str
    kind: EventType
    data: JSON
    callback: Callback


@dataclass(frozen=True, slots=True)
class CountPollers(Command[int]):
    """How many long polls are parked now."""


@dataclass(frozen=True, slots=True)
class ReleasePollers(Command[int]):
    """Answer every parked long poll now, with no jobs (the server is shutting down).
    Answer: how many were released."""


@dataclass(frozen=True, slots=True)
class SweepJobs(Command[int]):
    """Delete up to ``limit`` of the space's finished jobs past their retention (the
    space's setting over ``defaults``), and forget their idempotency keys. The actor
    reads them from the store, then the space drops those that came back to memory.
    Answer, once durable: how many went."""

    defaults: Retention
    limit: int
    reclaim_pages: int = 0
    """Free pages to give back to the file system with the deletes, at most."""


@dataclass(frozen=True, slots=True)
class GiveBack:
    """Told, not asked: these deliveries (job id, lease id) never reached their caller
    (it hung up before the answer went out). Each job still under that lease goes back
    to pending without spending an attempt."""

    deliveries: list[tuple[str, str]]


SpaceCommand = (
    CreateJobs
    | PollJobs
    | ClaimJob
    | AckJob
    | ReportProgress
    | SaveCheckpoint
    | RecordEvent
    | AppendLogs
    | KeepAlive
    | CompleteJobs
    | FailJobs
    | KillJob
    | RetryJob
    | CountJobs
    | StreamSnapshot
    | ApplySettings
    | ReleasePollers
    | CountPollers
    | RecordCallback
    | GiveBack
    | SweepJobs
)
