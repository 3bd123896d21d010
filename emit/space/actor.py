"""The space actor: one per space, the live truth of the space's jobs.

It owns the ready queue, the timer heap (one timer for every deadline of the space) and
the parked long polls. Each message is applied to memory through the pure rules of
`emit.domain`, the resulting rows are handed to the store writer, and the answer is
released only once that write is durable. Messages keep flowing while a write commits
(pipelining); the writer commits in order, so answers go out in order too.

The store writer only reports: it tells the space `Written` for each write, in commit
order, and the space does its after-commit work (answers, stream events, webhook hints,
push wakes) on its own task when that report arrives.

Jobs that reach a final state leave memory once written; the store answers for them.
If a write fails, the memory is ahead of the log, so the incarnation ends on purpose and
its supervisor restarts it from the store: the log is the truth after a failure. It ends
only once every write it made is reported, so each caller hears its real outcome.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import actors

from ..clock import Clock
from ..codec import JSON, dumps, loads
from ..domain import lifecycle
from ..domain.model import (
    Event,
    Job,
    JobStatus,
    NewJob,
    PollRequest,
    RetryBackoff,
    past_schedule,
)
from ..domain.queue import ReadyQueue
from ..domain.records import Callback, LogLine
from ..domain.settings import SpaceSettings, read_settings
from ..domain.timers import Timers
from ..errors import Conflict, EmitError, InvalidRequest, NotFound, Unavailable
from ..ids import MonotonicIds
from ..isotime import iso
from ..realtime.hub import EventHub, Published
from ..store.base import OutcomeUnknown, Store
from ..store.records import (
    Changes,
    event_record,
    job_row,
    log_row,
    state_row,
)
from ..store.writer import Commit, Settle, Source, Write, Written
from ..views import Delivery, JobView, log_to_wire
from .messages import (
    AckJob,
    AppendLogs,
    ApplySettings,
    ClaimJob,
    CompleteJobs,
    CountJobs,
    CountPollers,
    CreateJobs,
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
    SpaceMessage,
    StreamSnapshot,
)

FREEZE_OVER = 10_000
"""Live jobs past which a load moves the process's objects out of the collector's sight
(`gc.freeze`): a full collection would otherwise walk every job, again and again."""
log = logging.getLogger("emit.space")

SETTLE_SECONDS = 2.0
"""How long an ending incarnation waits for the writer to say how its last writes
ended; past it (the writer itself is restarting) their callers hear "may or may not"."""
EXPIRE_BATCH = 1000
"""Deadlines handled per wakeup, so a backlog (after downtime) does not starve messages."""


@dataclass(eq=False, slots=True)
class _Waiter:
    """A long poll parked until a job is ready or its wait ends."""

    request: PollRequest
    reply: actors.Reply
    deadline: float
    done: bool = False


@dataclass(slots=True)
class _Pending:
    """What one message (or one wakeup) changed, and the answers that wait on it."""

    inserted: dict[str, Job] = field(default_factory=dict)
    touched: dict[str, Job] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)
    """Each job's new events that go in its row, as text (`event_record`)."""
    changes: Changes = field(default_factory=Changes)
    answers: list[tuple[actors.Reply, Any]] = field(default_factory=list)
    published: list[Published] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)
    """New webhooks, for the sender once durable."""
    woken: list[tuple[str, str]] = field(default_factory=list)
    """(job id, name) of jobs that became pending, for the push wake once durable."""
    deltas: dict[JobStatus, int] = field(default_factory=dict)
    """How the counts by status changed, for the durable counts once durable."""
    """For the streams, once durable; only collected while someone watches the space."""


class SpaceActor(actors.Actor[SpaceMessage | Written]):
    def __init__(
        self,
        space_id: str,
        store: Store,
        writer: actors.ActorRef[Any],
        clock: Clock,
        hub: EventHub | None = None,
        notify_callbacks: Callable[[list[Callback]], None] | None = None,
        wake: Callable[[str, SpaceSettings, list[tuple[str, str]]], None] | None = None,
    ) -> None:
        self.space_id = space_id
        self.store = store
        self.writer = writer
        self.clock = clock
        self.hub = hub
        self.notify_callbacks = notify_callbacks
        self.wake = wake
        self.settings = SpaceSettings()
        self.jobs: dict[str, Job] = {}
        self.queue = ReadyQueue()
        self.timers = Timers()
        self.counts: dict[JobStatus, int] = {status: 0 for status in JobStatus}
        self.durable_counts: dict[JobStatus, int] = dict(self.counts)
        """The counts as of the last commit (``counts`` runs ahead while writes are in
        flight): what a space stream starts from, beside the stream's seq."""
        self.idempotency: dict[str, str] = {}
        self.default_backoff: RetryBackoff | None = None
        self.seq = 0
        self.ids = MonotonicIds()
        self.leases = MonotonicIds()
        self.waiters: list[tuple[float, int, _Waiter]] = []  # heap by deadline
        self.waiting: list[_Waiter] = []  # the same waiters, FIFO among pollers
        self.waiter_seq = itertools.count()
        self.source = Source()  # this incarnation, to the writer
        self.batches: deque[tuple[int, _Pending]] = deque()
        """Writes handed to the writer and not yet reported, oldest first."""
        self.batch = 0
        self.ending: str | None = None
        """Set once this incarnation must end (a write failed, or a bug): why, for the
        callers refused meanwhile. It stops once every write in flight is reported."""
        self.crash: Exception | None = None
        """An after-commit failure, raised (a crash) as the incarnation stops."""
        self.pending = _Pending()
        self.froze = False
        """Whether this incarnation's load froze the collector's view (`FREEZE_OVER`)."""

    # ------------------------------------------------------------------ lifecycle

    async def started(self) -> None:
        # Writes of an earlier incarnation may still sit in the writer: let them land
        # (or be refused) first, so what we load is all there will ever be.
        await self.writer.ask(Commit(Changes()), timeout=None)
        state = await self.store.load_space(self.space_id)
        if state is None:
            raise NotFound(f"no space {self.space_id}")
        self.settings = read_settings(state.space.settings)
        self.default_backoff = self.settings.retry_backoff
        self.counts.update(state.counts)
        self.durable_counts = dict(self.counts)
        self.seq = state.max_seq
        self.idempotency = dict(state.idempotency)
        jobs = self.jobs
        track = self.timers.track
        # A million new objects, and none of them garbage: keep the collector out of it,
        # then move them all to the permanent generation so it never walks them again.
        # Collect first: what is garbage now (a crashed incarnation nobody holds any
        # more) would otherwise be frozen with them, never to be collected.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for job in state.live_jobs:
                jobs[job.id] = job
                if job.deadline is not None:
                    track(job)
            self.queue.extend(job for job in state.live_jobs if job.status is JobStatus.PENDING)
        finally:
            if collecting:
                gc.enable()
        if len(state.live_jobs) > FREEZE_OVER:
            gc.collect()
            gc.freeze()
            self.froze = True

    async def stopped(self) -> None:
        if self.batches:
            await self._settle()
        # Let go of the jobs: whatever outlives this incarnation (a crash's traceback
        # holds the actor, and the supervisor holds the crash while the next incarnation
        # loads) then holds an empty shell, not the space.
        self.jobs = {}
        self.queue = ReadyQueue()
        self.timers = Timers()
        self.idempotency = {}
        self.waiters, self.waiting = [], []
        if self.froze:
            # Back to the collector's sight: what of this incarnation is still held now
            # is collected once let go of, instead of staying frozen for good. The next
            # big load collects, then freezes what lives.
            gc.unfreeze()

    async def _settle(self) -> None:
        """This incarnation ends with writes in flight whose reports it will never read
        (stopped for good, its mailbox closed; or stopped or crashed, and the next
        incarnation ignores them). Ask the writer how they ended, so that each caller
        hears its real outcome: never "restarting; retry" for a change that committed
        (a retry without an idempotency key would make it twice)."""
        error: BaseException | None
        try:
            error = await self.writer.ask(Settle(self.source), timeout=SETTLE_SECONDS)
        except actors.ActorError:  # the writer is down, or too slow to say: not known
            error = OutcomeUnknown("the writer did not say how the last writes ended")
        batches, self.batches = self.batches, deque()
        # A write of this incarnation failed, and those after it were refused; which of
        # these committed before it is not known here.
        failure = Unavailable(_MAY_OR_MAY_NOT)
        for _, pending in batches:
            if error is not None:
                for reply, _ in pending.answers:
                    reply.fail(failure)
                continue
            for reply, answer in pending.answers:
                _resolve(reply, answer)  # an undelivered lease expires as usual
            try:
                self._after_commit(pending)
            except Exception:
                log.exception("space %s: after-commit work failed as it stopped", self.space_id)

    def wakeup_at(self) -> float:
        if self.ending is not None:
            return math.inf  # memory is not to be trusted; the restart is coming
        next_at = self.timers.next_at()
        if self.waiters:
            next_at = min(next_at, self.waiters[0][0])
        return math.inf if next_at == math.inf else self.clock.to_trio(next_at)

    async def wakeup(self) -> None:
        if self.ending is not None:
            return
        now = self.clock.now()
        for job in self.timers.due(now, EXPIRE_BATCH):
            old = job.status
            self._change(job, old, lifecycle.expire(job, now, self._backoff_for(job), dumps))
        while self.waiters and self.waiters[0][0] <= now:
            _, _, waiter = heapq.heappop(self.waiters)
            if not waiter.done:
                waiter.done = True
                self.pending.answers.append((waiter.reply, []))
        self._serve_waiters(now)
        await self._flush()

    # -------------------------------------------------------------------- dispatch

    async def receive(self, message: SpaceMessage | Written) -> object:
        if isinstance(message, Written):
            if self._written(message):  # it gave back jobs nobody received: write that
                self._serve_waiters(self.clock.now())
                await self._flush()
            return None
        if self.ending is not None:
            # Memory is not to be trusted: refuse, untouched, until the writes in flight
            # are reported and the supervisor starts a new incarnation from the store.
            if isinstance(message, GiveBack):
                return None  # a tell (raising would crash at once): its leases expire
            raise Unavailable(self.ending)
        reply = self.context.defer()
        try:
            answer = await self._handle(message, reply)
        except EmitError as exc:
            # Refused before anything changed (the rules check first).
            self.pending.answers.append((reply, exc))
        except Exception:
            # A bug: what this message half did must not be written. Start over, once the
            # writes of earlier messages are reported: their callers get their outcome
            # (ending now would answer them "restarting" while their change commits).
            # The asker gets the error itself.
            self.pending = _Pending()
            self._end("the space is restarting after an error; nothing was accepted, retry")
            raise
        else:
            if answer is not _PARKED:
                self.pending.answers.append((reply, answer))
        self._serve_waiters(self.clock.now())
        await self._flush()
        return None

    async def _handle(self, message: SpaceMessage, reply: actors.Reply) -> Any:
        now = self.clock.now()
        match message:
            case CreateJobs(jobs, batch):
                return await self._create(jobs, now, batch)
            case PollJobs(request):
                return self._poll(request, now, reply)
            case ClaimJob(job_id):
                job = await self._live(job_id, "claim")
                if job.status is not JobStatus.PENDING:
                    raise Conflict(f"cannot claim a job that is {job.status}")
                if reply.done:
                    return None  # the caller is gone: lease nothing to nobody
                return self._deliver(job, now, ack=False)
            case AckJob(job_id, lease_id):
                job = await self._live(job_id, "ack")
                return self._apply(job, lambda: lifecycle.ack(job, now, lease_id))
            case ReportProgress(job_id, progress, lease_id):
                job = await self._live(job_id, "report progress on")
                return self._apply(job, lambda: lifecycle.progress(job, now, progress, lease_id))
            case SaveCheckpoint(job_id, state, data, lease_id):
                job = await self._live(job_id, "checkpoint")
                return self._apply(
                    job, lambda: lifecycle.checkpoint(job, now, state, data, lease_id)
                )
            case RecordEvent(job_id, kind, data, lease_id):
                job = await self._live(job_id, "record an event on")
                return self._apply(
                    job, lambda: lifecycle.custom_event(job, now, kind, data, lease_id)
                )
            case AppendLogs(job_id, lines, lease_id):
                job = await self._live(job_id, "log to")
                lifecycle.check_logs(job, lease_id)
                watched = self.hub is not None and self.hub.watched(self.space_id)
                for line in lines:
                    job.log_seq += 1
                    entry = LogLine(
                        job.log_seq, line.level, line.message, line.ts or now, line.fields
                    )
                    self.pending.changes.logs.append(log_row(job.id, entry))
                    if watched:
                        self.pending.published.append(
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
                job = await self._live(job_id, "keep alive")
                return self._apply(job, lambda: lifecycle.keepalive(job, now, seconds, lease_id))
            case CompleteJobs(items):
                # Live jobs (nearly all) without a coroutine each: only a job that left
                # memory needs the store, to say why it cannot be completed.
                live = self.jobs.get
                return [
                    self._complete_live(found, item, now)
                    if (found := live(item[0])) is not None
                    else await self._complete_one(item, now)
                    for item in items
                ]
            case FailJobs(items):
                return [await self._fail_one(item, now) for item in items]
            case KillJob(job_id, reason):
                job = await self._live(job_id, "kill")
                return self._apply(job, lambda: lifecycle.kill(job, now, reason, dumps))
            case RetryJob(job_id):
                return await self._retry(job_id, now)
            case CountJobs():
                return dict(self.counts)
            case StreamSnapshot():
                seq = 0 if self.hub is None else self.hub.seq(self.space_id)
                return dict(self.durable_counts), seq
            case ApplySettings(settings):
                self.settings = settings
                self.default_backoff = settings.retry_backoff
                return None
            case RecordCallback(job_id, kind, data, callback):
                job = self.jobs.get(job_id) or await self._stored(job_id)
                self._record(job, lifecycle.note(job, now, kind, data))
                self.pending.changes.callbacks.append(callback)
                return None
            case GiveBack(deliveries):
                self._give_back(deliveries, now)
                return None
            case CountPollers():
                return sum(1 for w in self.waiting if not w.done and not w.reply.done)
            case ReleasePollers():
                released = [waiter for waiter in self.waiting if not waiter.done]
                for waiter in released:
                    waiter.done = True
                    self.pending.answers.append((waiter.reply, []))
                self.waiting = []
                self.waiters = []
                return len(released)

    # ------------------------------------------------------------------- commands

    async def _create(
        self, new_jobs: list[NewJob], now: float, batch: bool = True
    ) -> list[tuple[JobView, bool]]:
        # Everything that can refuse the batch is done first (jobs that an idempotency
        # key points at and that left memory are read, new keyed jobs have their time
        # checked), so that nothing below can fail half way: the batch is all or nothing.
        stored: dict[str, JobView] = {}
        new_keys: set[str] = set()
        for index, new in enumerate(new_jobs):
            key = new.idempotency_key
            if key is None:
                continue
            job_id = self.idempotency.get(key)
            if job_id is not None and job_id not in self.jobs and job_id not in stored:
                stored[job_id] = JobView.of(await self._stored(job_id))
            if job_id is None and key not in new_keys:
                new_keys.add(key)
                if new.scheduled_for is not None and new.scheduled_for <= now:
                    error = past_schedule(now)
                    if batch:
                        error = InvalidRequest(f"jobs[{index}]: {error.message}", field=error.field)
                    raise error
        created: list[tuple[JobView, bool]] = []
        for new in new_jobs:
            key = new.idempotency_key
            if key is not None and key in self.idempotency:
                job_id = self.idempotency[key]
                existing = self.jobs.get(job_id)
                created.append((JobView.of(existing) if existing else stored[job_id], False))
                continue
            self.seq += 1
            job = Job.created(self.ids.next(now), self.space_id, self.seq, new, now)
            if key is not None:
                self.idempotency[key] = job.id
            self.jobs[job.id] = job
            self._count(job.status, 1)
            self.pending.inserted[job.id] = job
            self._record(job, lifecycle.created(job, now))
            self._file(job)
            created.append((JobView.of(job), True))
        return created

    def _poll(self, request: PollRequest, now: float, reply: actors.Reply) -> Any:
        if reply.done:
            return []  # the caller gave up while this waited in the mailbox: take nothing
        deliveries = self._take(request, now)
        if deliveries or request.wait <= 0:
            return deliveries
        waiter = _Waiter(request, reply, now + request.wait)
        heapq.heappush(self.waiters, (waiter.deadline, next(self.waiter_seq), waiter))
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
            if waiter.reply.done:  # the poller gave up: deliver nothing to nobody
                waiter.done = True
                continue
            deliveries = self._take(waiter.request, now)
            if deliveries:
                waiter.done = True
                self.pending.answers.append((waiter.reply, deliveries))
        self.waiting = [waiter for waiter in self.waiting if not waiter.done]

    def _deliver(self, job: Job, now: float, *, ack: bool) -> Delivery:
        old = job.status
        events = lifecycle.deliver(job, now, self.leases.next(now))
        if ack:
            events += lifecycle.ack(job, now, None)
        self._change(job, old, events)
        return Delivery.of(job)

    def _give_back(self, deliveries: list[tuple[str, str]], now: float) -> None:
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

    def _complete_live(
        self, job: Job, item: tuple[str, str, JSON, str | None], now: float
    ) -> JobView | EmitError:
        _, result, data, lease_id = item
        old = job.status
        try:
            events = lifecycle.complete(job, now, result, data, lease_id)
        except EmitError as exc:
            return exc
        self._change(job, old, events)
        return JobView.of(job)

    async def _complete_one(
        self, item: tuple[str, str, JSON, str | None], now: float
    ) -> JobView | EmitError:
        job_id, result, data, lease_id = item
        try:
            job = await self._live(job_id, "complete")
            return self._apply(job, lambda: lifecycle.complete(job, now, result, data, lease_id))
        except EmitError as exc:
            return exc

    async def _fail_one(self, item: tuple[str, str, str | None], now: float) -> JobView | EmitError:
        job_id, error, lease_id = item
        try:
            job = await self._live(job_id, "fail")
            backoff = self._backoff_for(job)
            return self._apply(
                job, lambda: lifecycle.fail(job, now, error, lease_id, backoff, dumps)
            )
        except EmitError as exc:
            return exc

    async def _retry(self, job_id: str, now: float) -> JobView:
        job = self.jobs.get(job_id)
        if job is None:
            job = await self._stored(job_id)  # final: only the store has it now
            old = job.status
            events = lifecycle.retry(job, now)  # refuses a completed job
            self.jobs[job.id] = job
            self._change(job, old, events)
            return JobView.of(job)
        return self._apply(job, lambda: lifecycle.retry(job, now))

    # ------------------------------------------------------------ state bookkeeping

    async def _live(self, job_id: str, action: str) -> Job:
        """The live job, or the refusal a caller gets for a final or unknown one."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        # Ended by this very message (a batch naming it twice): memory knows its state.
        ended = self.pending.touched.get(job_id) or self.pending.inserted.get(job_id)
        if ended is not None:
            raise Conflict(f"cannot {action} a job that is {ended.status}")
        stored = await self._stored(job_id)
        raise Conflict(f"cannot {action} a job that is {stored.status}")

    async def _stored(self, job_id: str) -> Job:
        """A job that is not in memory: final, or not ours. Read from the committed log."""
        if self.batches:  # once the writer has decided them, the store has all we wrote
            await self.writer.ask(Commit(Changes()), timeout=None)
        job = await self.store.get_job(job_id)
        if job is None or job.space_id != self.space_id:
            raise NotFound(f"no job {job_id} in this space")
        return job

    def _apply(self, job: Job, transition: Callable[[], list[Event]]) -> JobView:
        old = job.status
        self._change(job, old, transition())
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
            if job.callback_url is not None and job.status.final:
                self._queue_callback(job)
        self._record(job, events)
        self._file(job)

    def _count(self, status: JobStatus, change: int) -> None:
        """Count a job in or out of ``status``, now and (once written) in the durable
        counts."""
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
            self.ids.next(now), job.id, job.space_id, job.callback_url, job.callback_headers,
            body, 0, now, "pending", now,
        )  # fmt: skip
        self.pending.changes.callbacks.append(callback)
        self.pending.callbacks.append(callback)

    def _record(self, job: Job, events: list[Event]) -> None:
        pending = self.pending
        job_id = job.id
        text = ""
        for event in events:
            record = event_record(job_id, event)
            if isinstance(record, str):
                text += record
            else:  # past the row's share: a row of its own
                pending.changes.events.append(record)
        if text:
            entries = pending.entries
            entries[job_id] = entries.get(job_id, "") + text
        if self.hub is not None and self.hub.watched(self.space_id):
            status = str.__str__(job.status)
            self.pending.published.extend(
                Published(
                    job.id,
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
        elif job.status.final:
            self.jobs.pop(job.id, None)
        self.timers.track(job)

    def _backoff_for(self, job: Job) -> RetryBackoff | None:
        return job.retry_backoff or self.default_backoff

    # ------------------------------------------------------------- write, then answer

    async def _flush(self) -> None:
        """Hand what changed to the writer; answers go out when it is durable. Answers
        that changed nothing still wait for what is already in flight, so no answer can
        reveal a change before it is durable."""
        pending, self.pending = self.pending, _Pending()
        changes = pending.changes
        # Every job with entries is in one of the two (`_record` touches it).
        entries = pending.entries.get
        changes.inserts.extend(
            job_row(job, entries(job.id, "")) for job in pending.inserted.values()
        )
        changes.updates.extend(
            state_row(job, entries(job.id, "")) for job in pending.touched.values()
        )
        if not changes:
            if self.batches:
                self.batches[-1][1].answers.extend(pending.answers)
            else:
                for reply, answer in pending.answers:
                    _resolve(reply, answer)
            return
        self.batch += 1
        write = Write(changes, self.context.ref, self.batch, self.source)
        try:
            self.writer.tell_nowait(write)  # no scheduler pass when there is room
        except actors.MailboxFull:
            await self.writer.send(write)  # backpressure
        # In flight only once handed over (its report comes through the mailbox, which
        # this incarnation reads only after this message): a write that never reached
        # the writer leaves its callers to hear "restarting; retry", which is true.
        self.batches.append((self.batch, pending))

    def _written(self, report: Written) -> bool:
        """The writer's word on the oldest write in flight (its answers may have grown
        since, by answers that changed nothing and waited behind it). True if it gave
        back jobs whose caller had gone: that change is to be written."""
        if report.source is not self.source:
            return False  # of an earlier incarnation: its callers were answered as it ended
        batch, pending = self.batches.popleft()
        assert batch == report.batch, "the writer reports a client's writes in order"
        error = report.error
        if error is None:
            durable = self.durable_counts
            for status, change in pending.deltas.items():
                durable[status] += change
            undelivered: list[tuple[str, str]] = []
            for reply, answer in pending.answers:
                if reply.done:  # the caller left before its answer: jobs it took go back
                    _deliveries(answer, undelivered)
                else:
                    _resolve(reply, answer)
            try:
                self._after_commit(pending)
            except Exception as exc:
                self.crash = exc
                self._end("the space is restarting after an error; nothing was accepted, retry")
            else:
                if undelivered and self.ending is None:
                    self._give_back(undelivered, self.clock.now())
                    return True
        else:
            if isinstance(error, OutcomeUnknown):
                failure = Unavailable(_MAY_OR_MAY_NOT)
            else:
                failure = Unavailable("storage failed; nothing was accepted")
            for reply, _ in pending.answers:
                reply.fail(failure)
            self._end("storage failed; the space is reloading, nothing was accepted")
        if self.ending is not None and not self.batches:
            self.context.stop()  # every caller has its outcome: end, and reload
            if self.crash is not None:
                crash, self.crash = self.crash, None
                raise crash  # a crash, for the supervisor to see
        return False

    def _after_commit(self, pending: _Pending) -> None:
        """Tell the others what became durable. Publishing comes right after the durable
        counts, in one step: a stream's snapshot (the durable counts and the stream's
        seq) never falls between the two."""
        # Each step whatever became of the one before: a failing publish must not keep
        # the callback sender from hearing of a webhook. The first failure is raised
        # once all have run (the space restarts on it).
        failure: Exception | None = None
        if pending.published and self.hub is not None:
            try:
                self.hub.publish(self.space_id, pending.published)
            except Exception as exc:
                failure = exc
        if pending.callbacks and self.notify_callbacks is not None:
            try:
                self.notify_callbacks(pending.callbacks)
            except Exception as exc:
                failure = failure or exc
        if pending.woken and self.wake is not None:
            try:
                self.wake(self.space_id, self.settings, pending.woken)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _end(self, reason: str) -> None:
        """End this incarnation once every write in flight is reported; until then,
        refuse new messages with ``reason``."""
        if self.ending is None:
            self.ending = reason
        if not self.batches:
            self.context.stop()


_MAY_OR_MAY_NOT = (
    "storage failed while saving this change: it may or may not have been saved"
    " (retry with an idempotency key, or read it back)"
)


class _Parked:
    """The answer of a poll that was parked: it is given later."""


_PARKED = _Parked()


def _deliveries(answer: Any, into: list[tuple[str, str]]) -> None:
    """Add the (job id, lease id) of the deliveries in ``answer`` (a poll's or a
    claim's; other answers have none)."""
    if type(answer) is Delivery:
        into.append((answer.id, answer.lease_id))
    elif type(answer) is list:
        into.extend((item.id, item.lease_id) for item in answer if type(item) is Delivery)


def _resolve(reply: actors.Reply, answer: Any) -> None:
    if isinstance(answer, BaseException):
        reply.fail(answer)
    else:
        reply.set(answer)
