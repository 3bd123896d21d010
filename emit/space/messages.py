"""The messages a space actor understands: commands in the imperative, each a
`Request` whose type parameter is the answer. Inputs are validated before they are
sent (see `emit.domain.model`), so the actor only applies rules that need its state."""

from __future__ import annotations

from dataclasses import dataclass

import actors

from ..codec import JSON
from ..domain.model import (
    EventType,
    JobStatus,
    LogLevel,
    NewJob,
    PollRequest,
    Progress,
)
from ..domain.records import Callback
from ..domain.settings import SpaceSettings
from ..errors import EmitError
from ..views import Delivery, JobView


@dataclass(frozen=True, slots=True)
class CreateJobs(actors.Request[list[tuple[JobView, bool]]]):
    """Answer: each job, and False where an idempotency key returned an existing one."""

    jobs: list[NewJob]
    batch: bool = True
    """A batch (errors name the item's index) rather than one job."""


@dataclass(frozen=True, slots=True)
class PollJobs(actors.Request[list[Delivery]]):
    request: PollRequest


@dataclass(frozen=True, slots=True)
class ClaimJob(actors.Request[Delivery]):
    job_id: str


@dataclass(frozen=True, slots=True)
class AckJob(actors.Request[JobView]):
    job_id: str
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class ReportProgress(actors.Request[JobView]):
    job_id: str
    progress: Progress
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class SaveCheckpoint(actors.Request[JobView]):
    job_id: str
    state: str
    data: JSON
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class RecordEvent(actors.Request[JobView]):
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
class AppendLogs(actors.Request[int]):
    job_id: str
    lines: list[LogEntry]
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class KeepAlive(actors.Request[JobView]):
    job_id: str
    seconds: int | None
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class CompleteJobs(actors.Request[list[JobView | EmitError]]):
    """Each item ``(job_id, result as JSON text, result decoded, lease_id)``, judged alone:
    the job as it now is, or the error that refused that item."""

    items: list[tuple[str, str, JSON, str | None]]


@dataclass(frozen=True, slots=True)
class FailJobs(actors.Request[list[JobView | EmitError]]):
    """Each item ``(job_id, error, lease_id)``, judged alone."""

    items: list[tuple[str, str, str | None]]


@dataclass(frozen=True, slots=True)
class KillJob(actors.Request[JobView]):
    job_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class RetryJob(actors.Request[JobView]):
    job_id: str


@dataclass(frozen=True, slots=True)
class CountJobs(actors.Request[dict[JobStatus, int]]):
    pass


@dataclass(frozen=True, slots=True)
class StreamSnapshot(actors.Request[tuple[dict[JobStatus, int], int]]):
    """For a space stream starting: the counts as of the last commit, and the seq of the
    space's stream at that same commit, so counts and stream messages never overlap."""


@dataclass(frozen=True, slots=True)
class ApplySettings(actors.Request[None]):
    """The space's settings changed (they are already stored)."""

    settings: SpaceSettings


@dataclass(frozen=True, slots=True)
class RecordCallback(actors.Request[None]):
    """A webhook try ended: note it in the job's history and save the outbox row, in one
    transaction."""

    job_id: str
    kind: EventType
    data: JSON
    callback: Callback


@dataclass(frozen=True, slots=True)
class CountPollers(actors.Request[int]):
    """How many long polls are parked now."""


@dataclass(frozen=True, slots=True)
class ReleasePollers(actors.Request[int]):
    """Answer every parked long poll now, with no jobs (the server is shutting down).
    Answer: how many were released."""


@dataclass(frozen=True, slots=True)
class GiveBack:
    """Told, not asked: these deliveries (job id, lease id) never reached their caller
    (it hung up before the answer went out). Each job still under that lease goes back
    to pending without spending an attempt."""

    deliveries: list[tuple[str, str]]


SpaceMessage = (
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
)
