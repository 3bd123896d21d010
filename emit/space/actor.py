"""The space actor: one per space, the live truth of the space's jobs.

It sequences; the rules are `emit.domain.space.LiveSpace`'s. Each message is applied to
the space's memory, the effects' rows are handed to the store writer, and the answers,
stream events, webhook hints and push wakes are released only once that write is
durable. Messages keep flowing while a write commits (pipelining); the writer commits in
order and reports each write to the space as a `Written` message, in commit order, so
answers go out in order too.

A command that names a job only the store has (a stale complete, a retry of a dead
job) reads it from the store and is applied again: a final job whose write is still in
flight is in the space's memory, so the read never waits for the writer.

If a write fails, the memory is ahead of the log, so the incarnation ends on purpose and
its supervisor restarts it from the store: the log is the truth after a failure. It ends
only once every write it made is reported, so each caller hears its real outcome.
"""

from __future__ import annotations

import gc
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import actors

from ..clock import Clock
from ..domain.commands import GiveBack, ReleasePollers, SpaceCommand, StreamSnapshot, SweepJobs
from ..domain.job import Job
from ..domain.records import Callback
from ..domain.settings import SpaceSettings, read_settings
from ..domain.slack import Notice
from ..domain.space import Effects, LiveSpace
from ..domain.views import Delivery
from ..errors import MOVING_RETRY_AFTER, NotFound, Unavailable
from ..metrics import Metrics
from ..realtime.hub import EventHub
from ..store.base import Expired, Fenced, OutcomeUnknown, Store
from ..store.records import Changes, event_record, job_row, log_row, state_row
from ..store.writer import Commit, Settle, Source, Write, Written

FREEZE_OVER = 10_000
"""Live jobs past which a load moves the process's objects out of the collector's sight
(`gc.freeze`): a full collection would otherwise walk every job, again and again."""
log = logging.getLogger("emit.space")

SETTLE_SECONDS = 2.0
"""How long an ending incarnation waits for the writer to say how its last writes
ended; past it (the writer itself is restarting) their callers hear "may or may not"."""
_RESTARTING = "the space is restarting after an error; nothing was accepted, retry"


class SpaceActor(actors.Actor[SpaceCommand | Written]):
    def __init__(
        self,
        space_id: str,
        store: Store,
        writer: actors.ActorRef[Any],
        clock: Clock,
        hub: EventHub | None = None,
        notify_callbacks: Callable[[list[Callback]], None] | None = None,
        wake: Callable[[str, SpaceSettings, list[tuple[str, str]]], None] | None = None,
        metrics: Metrics | None = None,
        notify_slack: Callable[[str, SpaceSettings, list[Notice]], None] | None = None,
        epoch: int | None = None,
        moved: Callable[[str, int], None] | None = None,
    ) -> None:
        self.space_id = space_id
        self.fence = None if epoch is None else (space_id, epoch)
        """Every write of this incarnation carries it (`Changes.fence`): with nodes
        sharing a store, the epoch at which this node owns the space."""
        self.moved = moved
        """Told (space id, epoch) when the store refuses a write because another node
        took the space over: the runtime then stops this space for good."""
        self.lost = False
        """The space moved to another node: refuse everything, and wait to be stopped
        for good (never reload: the space is no longer this node's)."""
        self.store = store
        self.writer = writer
        self.clock = clock
        self.hub = hub
        self.notify_callbacks = notify_callbacks
        self.wake = wake
        self.notify_slack = notify_slack
        self.metrics = metrics or Metrics()
        self.meter = self.metrics.space(space_id)
        self.space = LiveSpace(space_id)
        self.source = Source()  # this incarnation, to the writer
        self.batches: deque[tuple[int, Effects]] = deque()
        """Writes handed to the writer and not yet reported, oldest first."""
        self.batch = 0
        self.ending: str | None = None
        """Set once this incarnation must end (a write failed, or a bug): why, for the
        callers refused meanwhile. It stops once every write in flight is reported."""
        self.crash: Exception | None = None
        """An after-commit failure, raised (a crash) as the incarnation stops."""
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
        # A million new objects, and none of them garbage: keep the collector out of it,
        # then move them all to the permanent generation so it never walks them again.
        # Collect first: what is garbage now (a crashed incarnation nobody holds any
        # more) would otherwise be frozen with them, never to be collected.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self.space.load(
                read_settings(state.space.settings), state.counts, state.max_seq,
                state.idempotency, state.live_jobs,
            )  # fmt: skip
        finally:
            if collecting:
                gc.enable()
        if len(state.live_jobs) > FREEZE_OVER:
            gc.collect()
            gc.freeze()
            self.froze = True
        self.metrics.track_space(self.space_id, self.space.durable_counts, self.space.pollers)

    async def stopped(self) -> None:
        if self.batches:
            await self._settle()
        self.metrics.untrack_space(self.space_id, self.space.durable_counts)
        # Let go of the jobs: whatever outlives this incarnation (a crash's traceback
        # holds the actor, and the supervisor holds the crash while the next incarnation
        # loads) then holds an empty shell, not the space.
        self.space.let_go()
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
        for _, effects in batches:
            if error is not None:
                for reply, _ in effects.answers:
                    _resolve(reply, failure)
                continue
            for reply, answer in effects.answers:
                _resolve(reply, answer)  # an undelivered lease expires as usual
            self.meter.durable(effects, self.clock.now())
            try:
                self._after_commit(effects)
            except Exception:
                log.exception("space %s: after-commit work failed as it stopped", self.space_id)

    def wakeup_at(self) -> float:
        if self.ending is not None:
            return math.inf  # memory is not to be trusted; the restart is coming
        next_at = self.space.next_deadline()
        return math.inf if next_at == math.inf else self.clock.to_trio(next_at)

    async def wakeup(self) -> None:
        if self.ending is not None:
            return
        self._watch()
        await self._flush(self.space.expire(self.clock.now()))

    # -------------------------------------------------------------------- dispatch

    async def receive(self, message: SpaceCommand | Written) -> object:
        if isinstance(message, Written):
            undelivered = self._written(message)
            if undelivered:  # it gave back jobs nobody received: write that
                self._watch()
                await self._flush(self.space.give_back(undelivered, self.clock.now()))
            return None
        if self.ending is not None and not (self.lost and isinstance(message, ReleasePollers)):
            # Memory is not to be trusted: refuse, untouched, until the writes in flight
            # are reported and the supervisor starts a new incarnation from the store.
            # (A space that moved still lets its parked polls go, empty, as it stops.)
            if isinstance(message, GiveBack):
                return None  # a tell (raising would crash at once): its leases expire
            raise Unavailable(self.ending, retry_after=MOVING_RETRY_AFTER if self.lost else None)
        self._watch()
        if isinstance(message, GiveBack):  # told: nobody waits for an answer
            await self._flush(self.space.give_back(message.deliveries, self.clock.now()))
            return None
        reply = self.context.defer()
        if isinstance(message, StreamSnapshot):
            seq = 0 if self.hub is None else self.hub.seq(self.space_id)
            snapshot = (dict(self.space.durable_counts), seq)
            await self._flush(Effects(answers=[(reply, snapshot)]))
            return None
        now = self.clock.now()
        expired: list[Expired] = []
        if isinstance(message, SweepJobs):
            try:
                expired = await self._expired(message, now)
            except Exception as exc:  # nothing changed: the sweeper hears it, the space goes on
                failed = Unavailable(f"could not read the jobs to sweep: {exc!r}")
                await self._flush(Effects(answers=[(reply, failed)]))
                return None
        try:
            if isinstance(message, SweepJobs):
                effects = self.space.sweep(expired, reply)
            else:
                effects = self.space.apply(message, now, reply)
            while effects.need:  # jobs only the store has: read them, and apply again
                stored: dict[str, Job | None] = {}
                for job_id in effects.need:
                    stored[job_id] = await self.store.get_job(job_id)
                effects = self.space.apply(message, now, reply, stored)
            # Part of the step: rows that cannot be made leave memory ahead of the log.
            changes = _changes(effects) if effects.writes() else None
            if changes is not None and isinstance(message, SweepJobs):
                changes.reclaim_pages = message.reclaim_pages
        except Exception:
            # A bug: what this message half did must not be written. Start over, once the
            # writes of earlier messages are reported: their callers get their outcome
            # (ending now would answer them "restarting" while their change commits).
            # The asker gets the error itself.
            self.space.discard()
            self._end(_RESTARTING)
            raise
        await self._flush(effects, changes)
        return None

    async def _expired(self, message: SweepJobs, now: float) -> list[Expired]:
        """The space's finished jobs past their retention, as the store has them. Read
        here, between two messages, so that nothing the space does falls between the
        read and `LiveSpace.sweep`: a job retried since it finished is in memory, and
        the space keeps it. A bounded read by index (`SweepJobs.limit` jobs at most):
        the space waits for it, a few milliseconds."""
        retention = message.defaults.over(self.space.settings.retention)
        cutoffs = retention.cutoffs(now)
        if not cutoffs:
            return []
        return await self.store.expired_jobs(self.space_id, cutoffs, message.limit)

    def _watch(self) -> None:
        """Stream events are collected only while someone watches the space."""
        self.space.watched = self.hub is not None and self.hub.watched(self.space_id)

    # ------------------------------------------------------------- write, then answer

    async def _flush(self, effects: Effects, changes: Changes | None = None) -> None:
        """Hand what changed to the writer; answers go out when it is durable. Answers
        that changed nothing still wait for what is already in flight, so no answer can
        reveal a change before it is durable. ``changes``: the rows of ``effects``, if
        made already."""
        if not effects.writes():
            if self.batches:
                self.batches[-1][1].answers.extend(effects.answers)
            else:
                for reply, answer in effects.answers:
                    _resolve(reply, answer)
            return
        if changes is None:
            changes = _changes(effects)
        changes.fence = self.fence
        self.batch += 1
        write = Write(changes, self.context.ref, self.batch, self.source)
        try:
            self.writer.tell_nowait(write)  # no scheduler pass when there is room
        except actors.MailboxFull:
            await self.writer.send(write)  # backpressure
        # In flight only once handed over (its report comes through the mailbox, which
        # this incarnation reads only after this message): a write that never reached
        # the writer leaves its callers to hear "restarting; retry", which is true.
        self.batches.append((self.batch, effects))

    def _written(self, report: Written) -> list[tuple[str, str]]:
        """The writer's word on the oldest write in flight (its answers may have grown
        since, by answers that changed nothing and waited behind it). Returns the
        deliveries whose caller had gone: those jobs are to be given back."""
        undelivered: list[tuple[str, str]] = []
        if report.source is not self.source:
            return undelivered  # of an earlier incarnation: its callers were answered
        batch, effects = self.batches.popleft()
        assert batch == report.batch, "the writer reports a client's writes in order"
        error = report.error
        if error is None:
            self.space.durable(effects)
            self.meter.durable(effects, self.clock.now())
            for reply, answer in effects.answers:
                if reply.done:  # the caller left before its answer: jobs it took go back
                    _deliveries(answer, undelivered)
                else:
                    _resolve(reply, answer)
            try:
                self._after_commit(effects)
            except Exception as exc:
                self.crash = exc
                self._end(_RESTARTING)
        else:
            if isinstance(error, Fenced):
                failure = Unavailable(_MOVED, retry_after=MOVING_RETRY_AFTER)
                if not self.lost and self.moved is not None and self.fence is not None:
                    self.moved(*self.fence)
                self.lost = True
            elif isinstance(error, OutcomeUnknown):
                failure = Unavailable(_MAY_OR_MAY_NOT)
            else:
                failure = Unavailable("storage failed; nothing was accepted")
            for reply, _ in effects.answers:
                _resolve(reply, failure)
            self._end(
                _MOVED
                if self.lost
                else "storage failed; the space is reloading, nothing was accepted"
            )
        if self.ending is not None:
            if not self.batches and not self.lost:
                self.context.stop()  # every caller has its outcome: end, and reload
                if self.crash is not None:
                    crash, self.crash = self.crash, None
                    raise crash  # a crash, for the supervisor to see
            return []
        return undelivered

    def _after_commit(self, effects: Effects) -> None:
        """Tell the others what became durable. Publishing comes right after the durable
        counts, in one step: a stream's snapshot (the durable counts and the stream's
        seq) never falls between the two."""
        # Each step whatever became of the one before: a failing publish must not keep
        # the callback sender from hearing of a webhook. The first failure is raised
        # once all have run (the space restarts on it).
        failure: Exception | None = None
        if effects.published and self.hub is not None:
            try:
                self.hub.publish(self.space_id, effects.published)
            except Exception as exc:
                failure = exc
        if effects.callbacks and self.notify_callbacks is not None:
            try:
                self.notify_callbacks(effects.callbacks)
            except Exception as exc:
                failure = failure or exc
        if effects.woken and self.wake is not None:
            try:
                self.wake(self.space_id, self.space.settings, effects.woken)
            except Exception as exc:
                failure = failure or exc
        if effects.notices and self.notify_slack is not None:
            try:
                self.notify_slack(self.space_id, self.space.settings, effects.notices)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _end(self, reason: str) -> None:
        """End this incarnation once every write in flight is reported; until then,
        refuse new messages with ``reason``."""
        if self.ending is None:
            self.ending = reason
        if not self.batches and not self.lost:
            self.context.stop()


def _changes(effects: Effects) -> Changes:
    """The rows of what ``effects`` changed: each job's row, or its changed columns,
    with its new events as text in the row (`event_record`), or past the row's share in
    rows of their own."""
    changes = Changes(callbacks=effects.outbox, deleted_jobs=effects.deleted)
    texts: dict[str, str] = {}
    event_rows = changes.events
    for job_id, events in effects.events.items():
        text = ""
        for event in events:
            record = event_record(job_id, event)
            if isinstance(record, str):
                text += record
            else:
                event_rows.append(record)
        texts[job_id] = text
    entry = texts.get
    changes.inserts.extend(job_row(job, entry(job.id, "")) for job in effects.inserted.values())
    changes.updates.extend(state_row(job, entry(job.id, "")) for job in effects.touched.values())
    if effects.logs:
        changes.logs.extend(log_row(job_id, line) for job_id, line in effects.logs)
    return changes


_MOVED = "the space moved to another node; nothing was accepted, retry"
_MAY_OR_MAY_NOT = (
    "storage failed while saving this change: it may or may not have been saved"
    " (retry with an idempotency key, or read it back)"
)


def _deliveries(answer: Any, into: list[tuple[str, str]]) -> None:
    """Add the (job id, lease id) of the deliveries in ``answer`` (a poll's or a
    claim's; other answers have none)."""
    if type(answer) is Delivery:
        into.append((answer.id, answer.lease_id))
    elif type(answer) is list:
        into.extend((item.id, item.lease_id) for item in answer if type(item) is Delivery)


def _resolve(reply: Any, answer: Any) -> None:
    """Give ``answer`` to ``reply`` (an `actors.Reply`: the space knows it only as a
    caller), or fail it with the error that refused the command."""
    if isinstance(answer, BaseException):
        reply.fail(answer)
    else:
        reply.set(answer)
