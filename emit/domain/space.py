"""The rules of one space, as a pure state machine: `LiveSpace.apply(command, now)`
changes the space's memory and returns the `Effects`: the jobs to write, their new
events and log lines, the webhooks to queue, the stream events, the push wakes and the
answers. It does no I/O and imports neither trio nor the actor runtime: the space actor
receives, applies, has the effects written, and only then publishes and answers.

It holds the live jobs (final ones leave memory once written; the store answers for
them), the ready queue, the timer heap, the parked long polls, the counts by status and
the idempotency keys. A command that needs a job only the store has changes nothing and
returns effects whose `need` names it; the actor reads it and applies the command again
with it in ``stored``. Jobs that ended in a write still in flight stay in `ended` until
that write is durable, so a read never has to wait for the writer.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..codec import dumps, loads
from ..errors import Conflict, EmitError, InvalidRequest, NotFound
from ..ids import MonotonicIds
from ..isotime import iso
from . import lifecycle
from .commands import (
    AckJob,
    AppendLogs,
    ApplySettings,
    ClaimJob,
    CompleteItem,
    CompleteJobs,
    CountJobs,
    CountPollers,
    CreateJobs,
    FailItem,
    FailJobs,
    GiveBack,
    KeepAlive,
    KillJob,
    PollJobs,
    RecordCallback,
    RecordEvent,
    ReleasePollers,
    ReportProgress,
    RetryJob,
    SaveCheckpoint,
    SpaceCommand,
    StreamSnapshot,
    SweepJobs,
)
from .job import Job, create_job
from .model import Event, JobStatus, NewJob, PollRequest, Published, RetryBackoff, past_schedule
from .queue import ReadyQueue
from .records import Callback, LogLine
from .settings import SpaceSettings
from .slack import Notice, notices
from .timers import Timers
from .views import Delivery, JobView, log_to_wire

EXPIRE_BATCH = 1000
"""Deadlines handled per wakeup, so a backlog (after downtime) does not starve messages."""


class Caller(Protocol):
    """Whoever waits for an answer: the space only needs to know whether they left."""

    @property
    def done(self) -> bool: ...


@dataclass(slots=True)
class Effects:
    """What one step changed, for the actor to write, then to publish and answer."""

    inserted: dict[str, Job] = field(default_factory=dict)
    """New jobs: a row each."""
    touched: dict[str, Job] = field(default_factory=dict)
    """Jobs that changed: their state columns, rewritten."""
    events: dict[str, list[Event]] = field(default_factory=dict)
    """Each inserted or touched job's new events, in order."""
    logs: list[tuple[str, LogLine]] = field(default_factory=list)
    outbox: list[Callback] = field(default_factory=list)
    """Outbox rows to insert or replace."""
    callbacks: list[Callback] = field(default_factory=list)
    """New webhooks, for the sender once durable (also in `outbox`)."""
    answers: list[tuple[Caller, Any]] = field(default_factory=list)
    """Each caller's answer, or the `EmitError` that refused it; given once durable."""
    published: list[Published] = field(default_factory=list)
    """For the streams, once durable; only collected while someone watches the space."""
    woken: list[tuple[str, str]] = field(default_factory=list)
    """(job id, name) of jobs that became pending, for the push wake once durable."""
    notices: list[Notice] = field(default_factory=list)
    """Job events for the space's Slack URL, once durable (only with one set)."""
    deltas: dict[JobStatus, int] = field(default_factory=dict)
    """How the counts by status changed, for the durable counts once durable."""
    ended: list[Job] = field(default_factory=list)
    """Final jobs this step wrote (they left memory, or a webhook try was noted on them):
    kept in `LiveSpace.ended` until durable."""
    need: tuple[str, ...] = ()
    """Jobs only the store has: the command changed nothing; apply it again with them."""
    expired_ack: int = 0
    """Leases that expired unacked (delivered jobs back to pending), for the metrics."""
    expired_run: int = 0
    """Leases that expired while running (a failed attempt: timeout), for the metrics."""
    deleted: list[str] = field(default_factory=list)
    """Finished jobs past their retention, to delete (`LiveSpace.sweep`)."""

    def writes(self) -> bool:
        return bool(self.inserted or self.touched or self.logs or self.outbox or self.deleted)


class _Missing(Exception):
    """A command names jobs only the store has (raised before anything changed)."""

    def __init__(self, job_ids: Iterable[str]) -> None:
        self.job_ids = tuple(dict.fromkeys(job_ids))


@dataclass(eq=False, slots=True)
class _Waiter:
    """A long poll parked until a job is ready or its wait ends."""

    request: PollRequest
    caller: Caller
    deadline: float
    done: bool = False


_PARKED = object()
"""The answer of a poll that was parked: it is given later."""
_NO_STORED: Mapping[str, Job | None] = {}


class LiveSpace:
    """One space's live state and rules."""

    def __init__(self, space_id: str) -> None:
        self.space_id = space_id
        self.settings = SpaceSettings()
        self.default_backoff: RetryBackoff | None = None
        self.slack: frozenset[str] | None = None
        """The events the space's Slack URL is told of (None: it has none)."""
        self.jobs: dict[str, Job] = {}
        self.ended: dict[str, tuple[Job, Effects]] = {}
        """Final jobs last written in a write not yet durable (with that write's effects):
        what the store will say once it is."""
        self.queue = ReadyQueue()
        self.timers = Timers()
        self.counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        self.durable_counts: dict[JobStatus, int] = dict(self.counts)
        """The counts as of the last durable write (``counts`` runs ahead while writes
        are in flight): what a space stream starts from."""
        self.idempotency: dict[str, str] = {}
        """idempotencyKey → job id, for every job of the space kept (a swept job's key
        is forgotten with it)."""
        self.sweeping: dict[str, Effects] = {}
        """Jobs whose delete is in a write not yet durable (with that write's effects):
        gone, whatever the store still says."""
        self.seq = 0
        self.ids = MonotonicIds()
        self.leases = MonotonicIds()
        self.waiters: list[tuple[float, int, _Waiter]] = []  # heap by deadline
        self.waiting: list[_Waiter] = []  # the same waiters, FIFO among pollers
        self._waiter_seq = itertools.count()
        self.watched = False
        """Whether someone streams the space: stream events are collected only then."""
        self.pending = Effects()
        self._stored: Mapping[str, Job | None] = _NO_STORED

    # ------------------------------------------------------------------ loading

    def load(
        self,
        settings: SpaceSettings,
        counts: Mapping[JobStatus, int],
        max_seq: int,
        idempotency: Mapping[str, str],
        live_jobs: list[Job],
    ) -> None:
        """Take the state the store kept (the space is empty before)."""
        self.apply_settings(settings)
        self.counts.update(counts)
        self.durable_counts = dict(self.counts)
        self.seq = max_seq
        self.idempotency = dict(idempotency)
        jobs, track = self.jobs, self.timers.track
        for job in live_jobs:
            jobs[job.id] = job
            if job.deadline is not None:
                track(job)
        self.queue.extend(job for job in live_jobs if job.status is JobStatus.PENDING)

    def let_go(self) -> None:
        """Drop every job: what outlives the space (a crash's traceback holds it) then
        holds an empty shell."""
        self.jobs, self.ended, self.idempotency, self.sweeping = {}, {}, {}, {}
        self.queue, self.timers = ReadyQueue(), Timers()
        self.waiters, self.waiting = [], []
        self.pending = Effects()

    def apply_settings(self, settings: SpaceSettings) -> None:
        self.settings = settings
        self.default_backoff = settings.retry_backoff
        self.slack = settings.slack

    # ------------------------------------------------------------------ stepping

    def apply(
        self,
        command: SpaceCommand,
        now: float,
        caller: Caller,
        stored: Mapping[str, Job | None] = _NO_STORED,
    ) -> Effects:
        """Apply one command from ``caller``. ``stored``: the jobs an earlier try named in
        `Effects.need`, as the store has them (None: not there)."""
        self._stored = stored
        try:
            answer = self._handle(command, now, caller)
        except _Missing as missing:
            assert not self.pending.writes(), "a command needs the store before it changes"
            return Effects(need=missing.job_ids)
        except EmitError as exc:
            self.pending.answers.append((caller, exc))  # refused before anything changed
        else:
            if answer is not _PARKED:
                self.pending.answers.append((caller, answer))
        finally:
            self._stored = _NO_STORED
        self._serve_waiters(now)
        return self.take()

    def expire(self, now: float) -> Effects:
        """Move the jobs whose deadline has come, and end the long polls whose wait has."""
        pending = self.pending
        for job in self.timers.due(now, EXPIRE_BATCH):
            old = job.status
            if old is JobStatus.DELIVERED:
                pending.expired_ack += 1
            elif old is JobStatus.RUNNING:
                pending.expired_run += 1
            self._change(job, old, lifecycle.expire(job, now, self._backoff_for(job), dumps))
        while self.waiters and self.waiters[0][0] <= now:
            _, _, waiter = heapq.heappop(self.waiters)
            if not waiter.done:
                waiter.done = True
                self.pending.answers.append((waiter.caller, []))
        self._serve_waiters(now)
        return self.take()

    def give_back(self, deliveries: Iterable[tuple[str, str]], now: float) -> Effects:
        """Jobs delivered to a caller that never received them: back to pending, unless
        they moved on from that lease since."""
        for job_id, lease_id in deliveries:
            job = self.jobs.get(job_id)
            if job is None:
                continue
            old = job.status
            try:
                events = lifecycle.give_back(job, now, lease_id)
            except Conflict:
                continue
            self._change(job, old, events)
        self._serve_waiters(now)
        return self.take()

    def sweep(
        self, expired: Iterable[tuple[str, JobStatus, str | None]], caller: Caller
    ) -> Effects:
        """Delete ``expired``, finished jobs past their retention as the store had them
        when the actor read them (job id, status, idempotency key), but for any back in
        memory since (a retry). Their keys are forgotten: a key lasts as long as its
        job. The caller's answer: how many go."""
        pending = self.pending
        jobs, ended, sweeping, keys = self.jobs, self.ended, self.sweeping, self.idempotency
        for job_id, status, key in expired:
            if job_id in jobs or job_id in ended or job_id in sweeping:
                continue
            pending.deleted.append(job_id)
            sweeping[job_id] = pending
            self._count(status, -1)
            if key is not None and keys.get(key) == job_id:
                del keys[key]
        pending.answers.append((caller, len(pending.deleted)))
        return self.take()

    def next_deadline(self) -> float:
        """When `expire` next has work (wall-clock seconds; inf: none)."""
        next_at = self.timers.next_at()
        if self.waiters:
            next_at = min(next_at, self.waiters[0][0])
        return next_at

    def take(self) -> Effects:
        """What changed since the last step, and start afresh."""
        effects, self.pending = self.pending, Effects()
        return effects

    def discard(self) -> None:
        """Forget the effects of a step that failed half way (the space's memory is then
        not to be trusted: its owner starts over from the store)."""
        self.pending = Effects()

    def durable(self, effects: Effects) -> None:
        """``effects`` were written: count them as durable, and the jobs that ended
        there are the store's to tell from now on."""
        counts = self.durable_counts
        for status, change in effects.deltas.items():
            counts[status] += change
        ended = self.ended
        for job in effects.ended:
            entry = ended.get(job.id)
            if entry is not None and entry[1] is effects:  # not ended again since
                del ended[job.id]
        sweeping = self.sweeping
        for job_id in effects.deleted:
            if sweeping.get(job_id) is effects:
                del sweeping[job_id]

    def pollers(self) -> int:
        return sum(1 for w in self.waiting if not w.done and not w.caller.done)

    # ------------------------------------------------------------------ commands

    def _handle(self, command: SpaceCommand, now: float, caller: Caller) -> Any:
        match command:
            case CreateJobs(jobs, batch):
                return self._create(jobs, now, batch)
            case PollJobs(request):
                return self._poll(request, now, caller)
            case ClaimJob(job_id):
                job = self._live(job_id, "claim")
                if job.status is not JobStatus.PENDING:
                    raise Conflict(f"cannot claim a job that is {job.status}")
                if caller.done:
                    return None  # the caller is gone: lease nothing to nobody
                return self._deliver(job, now, ack=False)
            case AckJob(job_id, lease_id):
                job = self._live(job_id, "ack")
                return self._view(job, job.status, lifecycle.ack(job, now, lease_id))
            case ReportProgress(job_id, progress, lease_id):
                job = self._live(job_id, "report progress on")
                return self._view(job, job.status, lifecycle.progress(job, now, progress, lease_id))
            case SaveCheckpoint(job_id, state, data, lease_id):
                job = self._live(job_id, "checkpoint")
                return self._view(
                    job, job.status, lifecycle.checkpoint(job, now, state, data, lease_id)
                )
            case RecordEvent(job_id, kind, data, lease_id):
                job = self._live(job_id, "record an event on")
                return self._view(
                    job, job.status, lifecycle.custom_event(job, now, kind, data, lease_id)
                )
            case AppendLogs(job_id, lines, lease_id):
                job = self._live(job_id, "log to")
                lifecycle.check_logs(job, lease_id)
                pending = self.pending
                for line in lines:
                    job.log_seq += 1
                    entry = LogLine(
                        job.log_seq, line.level, line.message, line.ts or now, line.fields
                    )
                    pending.logs.append((job.id, entry))
                    if self.watched:
                        pending.published.append(
                            Published(
                                job.id,
                                job.name,
                                str.__str__(job.status),
                                "log",
                                job.attempt_number,
                                log_to_wire(entry),
                                entry.ts,
                                0,
                            )
                        )
                self._touch(job)
                return len(lines)
            case KeepAlive(job_id, seconds, lease_id):
                job = self._live(job_id, "keep alive")
                return self._view(job, job.status, lifecycle.keepalive(job, now, seconds, lease_id))
            case CompleteJobs(items):
                self._need(item.job_id for item in items)
                return [self._complete(item, now) for item in items]
            case FailJobs(items):
                self._need(item.job_id for item in items)
                return [self._fail(item, now) for item in items]
            case KillJob(job_id, reason):
                job = self._live(job_id, "kill")
                return self._view(job, job.status, lifecycle.kill(job, now, reason, dumps))
            case RetryJob(job_id):
                live = self.jobs.get(job_id)
                if live is not None:
                    return self._view(live, live.status, lifecycle.retry(live, now))
                final = self._final(job_id)  # back to memory, if it may be retried
                old = final.status
                events = lifecycle.retry(final, now)  # refuses a completed job
                self.ended.pop(job_id, None)
                self.jobs[job_id] = final
                self._change(final, old, events)
                return JobView.of(final)
            case CountJobs():
                return dict(self.counts)
            case StreamSnapshot():
                raise AssertionError("the actor answers a stream's snapshot")  # pragma: no cover
            case ApplySettings(settings):
                self.apply_settings(settings)
                return None
            case RecordCallback(job_id, kind, data, callback):
                noted = self.jobs.get(job_id)
                if noted is None:
                    # Final: the note changes it in a write of its own, so the store is
                    # behind until that write is durable, and memory answers for it.
                    noted = self._final(job_id)
                    self.ended[job_id] = (noted, self.pending)
                    self.pending.ended.append(noted)
                self._record(noted, lifecycle.note(noted, now, kind, data))
                self.pending.outbox.append(callback)
                return None
            case GiveBack():
                raise AssertionError("a give-back is told: see `give_back`")  # pragma: no cover
            case SweepJobs():
                raise AssertionError(
                    "the actor reads what to sweep: see `sweep`"
                )  # pragma: no cover
            case CountPollers():
                return self.pollers()
            case ReleasePollers():
                released = [waiter for waiter in self.waiting if not waiter.done]
                for waiter in released:
                    waiter.done = True
                    self.pending.answers.append((waiter.caller, []))
                self.waiting = []
                self.waiters = []
                return len(released)

    def _create(
        self, new_jobs: list[NewJob], now: float, batch: bool
    ) -> list[tuple[JobView, bool]]:
        # Everything that can refuse the batch is done first (jobs that an idempotency
        # key points at and that left memory are looked up, new keyed jobs have their
        # time checked), so that nothing below can fail half way: all or nothing.
        known: dict[str, JobView] = {}
        new_keys: set[str] = set()
        missing: list[str] = []
        for index, new in enumerate(new_jobs):
            key = new.idempotency_key
            if key is None:
                continue
            job_id = self.idempotency.get(key)
            if job_id is not None and job_id not in self.jobs and job_id not in known:
                entry = self.ended.get(job_id)
                job = entry[0] if entry is not None else self._stored.get(job_id)
                if job is not None:
                    known[job_id] = JobView.of(job)
                elif job_id in self._stored:
                    raise NotFound(f"no job {job_id} in this space")
                else:
                    missing.append(job_id)
            if job_id is None and key not in new_keys:
                new_keys.add(key)
                if new.scheduled_for is not None and new.scheduled_for <= now:
                    error = past_schedule(now)
                    if batch:
                        error = InvalidRequest(f"jobs[{index}]: {error.message}", field=error.field)
                    raise error
        if missing:
            raise _Missing(missing)
        created: list[tuple[JobView, bool]] = []
        pending = self.pending
        for new in new_jobs:
            key = new.idempotency_key
            if key is not None and key in self.idempotency:
                job_id = self.idempotency[key]
                existing = self.jobs.get(job_id)
                created.append((JobView.of(existing) if existing else known[job_id], False))
                continue
            self.seq += 1
            job = create_job(self.ids.next(now), self.space_id, self.seq, new, now)
            if key is not None:
                self.idempotency[key] = job.id
            self.jobs[job.id] = job
            self._count(job.status, 1)
            pending.inserted[job.id] = job
            self._record(job, lifecycle.created(job, now))
            self._file(job)
            created.append((JobView.of(job), True))
        return created

    def _poll(self, request: PollRequest, now: float, caller: Caller) -> Any:
        if caller.done:
            return []  # the caller gave up while this waited in the mailbox: take nothing
        deliveries = self._take(request, now)
        if deliveries or request.wait <= 0:
            return deliveries
        waiter = _Waiter(request, caller, now + request.wait)
        heapq.heappush(self.waiters, (waiter.deadline, next(self._waiter_seq), waiter))
        self.waiting.append(waiter)
        return _PARKED

    def _take(self, request: PollRequest, now: float) -> list[Delivery]:
        deliveries: list[Delivery] = []
        while len(deliveries) < request.count:
            job = self.queue.pop(request.names)
            if job is None:
                break
            deliveries.append(self._deliver(job, now, ack=request.ack))
        return deliveries

    def _serve_waiters(self, now: float) -> None:
        """Hand ready jobs to parked pollers, first come first served."""
        if not self.waiting:
            return
        for waiter in self.waiting:
            if not len(self.queue):
                break
            if waiter.done:
                continue
            if waiter.caller.done:  # the poller gave up: deliver nothing to nobody
                waiter.done = True
                continue
            deliveries = self._take(waiter.request, now)
            if deliveries:
                waiter.done = True
                self.pending.answers.append((waiter.caller, deliveries))
        self.waiting = [waiter for waiter in self.waiting if not waiter.done]

    def _deliver(self, job: Job, now: float, *, ack: bool) -> Delivery:
        old = job.status
        events = lifecycle.deliver(job, now, self.leases.next(now))
        if ack:
            events += lifecycle.ack(job, now, None)
        self._change(job, old, events)
        return Delivery.of(job)

    def _complete(self, item: CompleteItem, now: float) -> JobView | EmitError:
        job_id, result, data, lease_id = item
        try:
            job = self._live(job_id, "complete")
            old = job.status
            self._change(job, old, lifecycle.complete(job, now, result, data, lease_id))
        except EmitError as exc:
            return exc
        return JobView.of(job)

    def _fail(self, item: FailItem, now: float) -> JobView | EmitError:
        job_id, error, lease_id = item
        try:
            job = self._live(job_id, "fail")
            backoff = self._backoff_for(job)
            old = job.status
            self._change(job, old, lifecycle.fail(job, now, error, lease_id, backoff, dumps))
        except EmitError as exc:
            return exc
        return JobView.of(job)

    # ------------------------------------------------------------ the jobs it names

    def _need(self, job_ids: Iterable[str]) -> None:
        """Before a batch changes anything: the jobs it names that only the store has."""
        jobs, ended, stored, sweeping = self.jobs, self.ended, self._stored, self.sweeping
        missing = [
            i
            for i in job_ids
            if i not in jobs and i not in ended and i not in stored and i not in sweeping
        ]
        if missing:
            raise _Missing(missing)

    def _live(self, job_id: str, action: str) -> Job:
        """The live job, or the refusal a caller gets for a final or unknown one."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        # Ended by this very command (a batch naming it twice): memory knows its state.
        ended = self.pending.touched.get(job_id) or self.pending.inserted.get(job_id)
        if ended is None:
            ended = self._final(job_id)
        raise Conflict(f"cannot {action} a job that is {ended.status}")

    def _final(self, job_id: str) -> Job:
        """A job that is not live: final (in a write in flight, or in the store), or not
        of this space."""
        entry = self.ended.get(job_id)
        if entry is not None:
            return entry[0]
        if job_id in self.sweeping:  # deleted, in a write not yet durable
            raise NotFound(f"no job {job_id} in this space")
        if job_id not in self._stored:
            raise _Missing((job_id,))
        job = self._stored[job_id]
        if job is None or job.space_id != self.space_id:
            raise NotFound(f"no job {job_id} in this space")
        return job

    # ------------------------------------------------------------ state bookkeeping

    def _view(self, job: Job, old: JobStatus, events: list[Event]) -> JobView:
        """Account for a transition that just happened to ``job`` (from ``old``), and
        its snapshot. Callers pass ``job.status`` before the transition's call, in the
        same argument list: arguments are evaluated left to right."""
        self._change(job, old, events)
        return JobView.of(job)

    def _change(self, job: Job, old: JobStatus, events: list[Event]) -> None:
        """Account for a transition that just happened to ``job`` (from ``old``)."""
        new = job.status
        if new is not old:
            # `_count` twice, inline: two transitions a job
            counts, deltas = self.counts, self.pending.deltas
            counts[old] -= 1
            counts[new] += 1
            deltas[old] = deltas.get(old, 0) - 1
            deltas[new] = deltas.get(new, 0) + 1
            if old is JobStatus.PENDING:
                self.queue.discard(job)
            if job.callback_url is not None and new.final:
                self._queue_callback(job)
        self._record(job, events)
        self._file(job)

    def _count(self, status: JobStatus, change: int) -> None:
        self.counts[status] += change
        deltas = self.pending.deltas
        deltas[status] = deltas.get(status, 0) + change

    def _queue_callback(self, job: Job) -> None:
        """The job ended and has a callbackUrl: an outbox row, written with the change."""
        assert job.callback_url is not None and job.completed_at is not None
        now = job.completed_at
        body = dumps(
            {
                "jobId": job.id,
                "spaceId": job.space_id,
                "name": job.name,
                "status": str.__str__(job.status),
                "attemptNumber": job.attempt_number,
                "result": None if job.result is None else loads(job.result),
                "timestamp": iso(now),
            }
        )
        callback = Callback(
            self.ids.next(now),
            job.id,
            job.space_id,
            job.callback_url,
            job.callback_headers,
            body,
            0,
            now,
            "pending",
            now,
        )
        self.pending.outbox.append(callback)
        self.pending.callbacks.append(callback)

    def _record(self, job: Job, events: list[Event]) -> None:
        pending = self.pending
        job_id = job.id
        if events:
            if self.slack is not None:
                pending.notices += notices(job_id, job.name, events, self.slack)
            known = pending.events.get(job_id)
            if known is None:
                pending.events[job_id] = events
            else:
                known += events
            if self.watched:
                status = str.__str__(job.status)
                pending.published.extend(
                    Published(
                        job_id,
                        job.name,
                        status,
                        str.__str__(event.type),
                        event.attempt_number,
                        event.data,
                        event.created_at,
                        event.seq,
                    )
                    for event in events
                )
        if job_id not in pending.inserted:  # `_touch`, inline: a call per change adds up
            pending.touched[job_id] = job

    def _touch(self, job: Job) -> None:
        if job.id not in self.pending.inserted:
            self.pending.touched[job.id] = job

    def _file(self, job: Job) -> None:
        """Put the job where its state says: the queue, the timer heap, or out of memory."""
        if job.status is JobStatus.PENDING:
            if not job.in_queue and self.settings.wakes(job.name):
                self.pending.woken.append((job.id, job.name))
            self.queue.push(job)
        elif job.status.final and self.jobs.pop(job.id, None) is not None:
            self.ended[job.id] = (job, self.pending)
            self.pending.ended.append(job)
        self.timers.track(job)

    def _backoff_for(self, job: Job) -> RetryBackoff | None:
        return job.retry_backoff or self.default_backoff
