"""The job state machine of spec §3: every transition, every refusal.

Each function checks first and changes second, so a refused call (`Conflict`) leaves
the job exactly as it was. It returns the events it appended; the caller persists them
with the job and re-files the job in its queue and timer heap by its new state.

Which state each call accepts: ack — delivered; progress, checkpoint, event, logs and
keepalive — delivered or running; complete and fail — running or delivered (a worker
that skips ack still works); kill — any live state; retry — dead or killed; give back
(a delivery nobody received) — delivered or running, under the lease it was given.
"""

from __future__ import annotations

from collections.abc import Callable

from ..codec import JSON
from ..errors import Conflict
from .job import Job
from .model import Event, EventType, JobStatus, Progress, RetryBackoff

S = JobStatus
_WORKING = frozenset({S.DELIVERED, S.RUNNING})
_LIVE = frozenset({S.SCHEDULED, S.PENDING, S.DELIVERED, S.RUNNING})


_new_tuple = tuple.__new__


def _event(job: Job, type: EventType, data: JSON, now: float) -> Event:
    job.event_seq += 1
    job.updated_at = now
    # The named tuple's own ``__new__`` is a Python function around this same call.
    return _new_tuple(Event, (job.event_seq, type, job.attempt_number, data, now))


def check(job: Job, allowed: frozenset[JobStatus], action: str, lease_id: str | None) -> None:
    """Refuse unless the job is in an allowed state and any lease named is the live one."""
    if job.status not in allowed:
        raise Conflict(f"cannot {action} a job that is {job.status}")
    if lease_id is not None and lease_id != job.lease_id:
        raise Conflict(f"lease {lease_id} is stale: the job was delivered again since")


def created(job: Job, now: float) -> list[Event]:
    data: JSON = {"name": job.name, "priority": job.priority}
    return [_event(job, EventType.CREATED, data, now)]


def make_due(job: Job) -> None:
    """A scheduled job whose time has come becomes pending (no event: nothing happened
    to it but time)."""
    job.status = S.PENDING
    job.deadline = None
    job.scheduled_for = None


def deliver(job: Job, now: float, lease_id: str) -> list[Event]:
    if job.status is not S.PENDING:
        raise Conflict(f"cannot claim a job that is {job.status}")
    job.status = S.DELIVERED
    job.lease_id = lease_id
    job.delivered_at = now
    job.started_at = None  # this attempt's, once acked: never an earlier attempt's
    job.deadline = now + job.timeout_seconds
    return [_event(job, EventType.DELIVERED, {"leaseId": lease_id}, now)]


def give_back(job: Job, now: float, lease_id: str) -> list[Event]:
    """The poll or claim that leased the job under ``lease_id`` could not hand it over
    (its caller was gone): back to pending with the same attemptNumber, as nobody saw
    it. Refused once the job moved on from that lease."""
    check(job, _WORKING, "give back", lease_id)
    job.status = S.PENDING
    job.lease_id = None
    job.deadline = None
    job.started_at = None
    job.progress = None
    return [_event(job, EventType.DELIVERY_TIMEOUT, {"reason": "caller_gone"}, now)]


def ack(job: Job, now: float, lease_id: str | None) -> list[Event]:
    check(job, frozenset({S.DELIVERED}), "ack", lease_id)
    job.status = S.RUNNING
    job.started_at = now
    job.deadline = now + job.timeout_seconds
    return [_event(job, EventType.STARTED, None, now)]


def progress(job: Job, now: float, update: Progress, lease_id: str | None) -> list[Event]:
    check(job, _WORKING, "report progress on", lease_id)
    job.progress = update.to_wire()
    _restart_deadline(job, now)
    return [_event(job, EventType.PROGRESS, job.progress, now)]


def checkpoint(job: Job, now: float, state: str, data: JSON, lease_id: str | None) -> list[Event]:
    """``state`` is the encoded checkpoint, ``data`` the same decoded for the event."""
    check(job, _WORKING, "checkpoint", lease_id)
    job.checkpoint = state
    _restart_deadline(job, now)
    return [_event(job, EventType.CHECKPOINT, data, now)]


def custom_event(job: Job, now: float, kind: str, data: JSON, lease_id: str | None) -> list[Event]:
    check(job, _WORKING, "record an event on", lease_id)
    return [_event(job, EventType.EVENT, {"type": kind, "data": data}, now)]


def keepalive(job: Job, now: float, seconds: int | None, lease_id: str | None) -> list[Event]:
    """Push the current deadline (ack or run) out; no event, nothing happened but life."""
    check(job, _WORKING, "keep alive", lease_id)
    job.deadline = now + (job.timeout_seconds if seconds is None else seconds)
    job.updated_at = now
    return []


def check_logs(job: Job, lease_id: str | None) -> None:
    check(job, _WORKING, "log to", lease_id)


def _restart_deadline(job: Job, now: float) -> None:
    job.deadline = now + job.timeout_seconds


def complete(job: Job, now: float, result: str, data: JSON, lease_id: str | None) -> list[Event]:
    check(job, _WORKING, "complete", lease_id)
    job.status = S.COMPLETED
    job.result = result
    _end(job, now)
    return [_event(job, EventType.COMPLETED, {"result": data}, now)]


def fail(
    job: Job,
    now: float,
    error: str,
    lease_id: str | None,
    default_backoff: RetryBackoff | None,
    encode: Callable[[JSON], str],
) -> list[Event]:
    check(job, _WORKING, "fail", lease_id)
    return _failed_attempt(job, now, error, default_backoff, encode)


def expire(
    job: Job, now: float, default_backoff: RetryBackoff | None, encode: Callable[[JSON], str]
) -> list[Event]:
    """The job's deadline passed: due if scheduled, re-queued if never acked, failed with
    "timeout" if running."""
    if job.status is S.SCHEDULED:
        make_due(job)
        return []
    if job.status is S.DELIVERED:
        job.status = S.PENDING
        job.lease_id = None
        job.deadline = None
        return [_event(job, EventType.DELIVERY_TIMEOUT, None, now)]
    if job.status is S.RUNNING:
        return _failed_attempt(job, now, "timeout", default_backoff, encode)
    raise AssertionError(f"no deadline applies to a {job.status} job")


def _failed_attempt(
    job: Job,
    now: float,
    error: str,
    default_backoff: RetryBackoff | None,
    encode: Callable[[JSON], str],
) -> list[Event]:
    if job.attempt_number >= job.max_retries:
        job.status = S.DEAD
        job.result = encode({"error": error})
        _end(job, now)
        return [_event(job, EventType.DEAD, {"error": error}, now)]
    job.attempt_number += 1
    job.lease_id = None
    job.progress = None
    backoff = job.retry_backoff or default_backoff
    delay = backoff.delay(job.attempt_number) if backoff is not None else 0.0
    data: dict[str, JSON] = {"error": error, "attemptNumber": job.attempt_number}
    if delay > 0:
        job.status = S.SCHEDULED
        job.scheduled_for = job.deadline = now + delay
        data["delaySeconds"] = delay
    else:
        job.status = S.PENDING
        job.deadline = None
    return [_event(job, EventType.RETRIED, data, now)]


def kill(job: Job, now: float, reason: str | None, encode: Callable[[JSON], str]) -> list[Event]:
    if job.status not in _LIVE:
        raise Conflict(f"cannot kill a job that is {job.status}")
    job.status = S.KILLED
    job.result = encode({"reason": reason})
    _end(job, now)
    return [_event(job, EventType.KILLED, {"reason": reason}, now)]


def retry(job: Job, now: float) -> list[Event]:
    """Manual retry: a dead or killed job goes back to pending with attempts reset."""
    if job.status not in (S.DEAD, S.KILLED):
        raise Conflict(f"only a dead or killed job can be retried, this one is {job.status}")
    job.status = S.PENDING
    job.attempt_number = 0
    job.result = None
    job.progress = None
    job.completed_at = None
    job.deadline = None
    job.scheduled_for = None
    return [_event(job, EventType.RETRIED, {"manual": True}, now)]


def _end(job: Job, now: float) -> None:
    job.lease_id = None
    job.deadline = None
    job.completed_at = now


def note(job: Job, now: float, kind: EventType, data: JSON) -> list[Event]:
    """An event that changes nothing but the history (a webhook try), in any state."""
    return [_event(job, kind, data, now)]
