"""Property tests of the pure job rules: any sequence of creates, polls (with and without
ack), claims, acks, progress, checkpoints, events, keepalives, completes, fails, kills,
retries and clock advances keeps the invariants of docs/lifecycle.md.

The harness files jobs the way the space actor does (`emit/space/actor.py`: `_change`,
`_file`, `_deliver`, `wakeup`): one ready queue, one timer heap drained a small batch
at a time, counts by status kept on every transition, and final jobs leaving memory for
the store (a retry takes a fresh copy back, as the actor reads one from the store).
After every step:

- a job holds a lease exactly while delivered or running, no lease is live for two
  jobs, and replaying any job's history never shows a delivery while a lease is live;
- the counts by status equal the jobs' statuses;
- attempt numbers never go back (only a manual retry resets them, to 0);
- every transition returned exactly its events (types, consecutive seqs, the job's
  attempt number, the time), every call was accepted exactly from the states the
  table allows, and a refused call changed nothing;
- the ready queue holds exactly the pending jobs, and a poll takes the best of them;
- no deadline fires early, none is missed: once the clock's due work is done, every
  deadline is in the future, and the timer heap fires no later than any of them.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from emit.codec import dumps
from emit.domain import lifecycle
from emit.domain.job import Job, create_job
from emit.domain.model import Event, EventType, JobStatus, NewJob, RetryBackoff, validate_progress
from emit.domain.queue import ReadyQueue
from emit.domain.timers import Timers
from emit.errors import Conflict

S = JobStatus
E = EventType
START = 1_800_000_000.0
NAMES = ("a", "b")
WORKING = frozenset({S.DELIVERED, S.RUNNING})
LIVE = frozenset({S.SCHEDULED, S.PENDING, S.DELIVERED, S.RUNNING})
EXPIRE_BATCH = 2
"""Deadlines handled per wakeup: small, so a backlog takes several wakeups (the actor
handles 1,000; the order of work is the same)."""
_ENDS_LEASE = frozenset({E.DELIVERY_TIMEOUT, E.RETRIED, E.COMPLETED, E.DEAD, E.KILLED})
_HARNESS_SLOTS = frozenset({"queue_token", "in_queue", "timer_at"})
_STORED_SLOTS = tuple(slot for slot in Job.__slots__ if slot not in _HARNESS_SLOTS)

backoffs = st.none() | st.builds(
    lambda initial, factor, extra: RetryBackoff(initial, factor, initial + extra),
    st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    st.sampled_from([1.0, 2.0]),
    st.sampled_from([0.0, 2.0]),
)
leases = st.sampled_from(["none", "live", "live", "stale", "bogus"])
picks = st.tuples(st.sampled_from(["fit", "fit", "any"]), st.integers(0, 1_000))
"""Which job a call names: mostly one in a state the call accepts, else any job the
space ever made, final ones included."""
PROGRESS = validate_progress(50, "half way", None)


def snapshot(job: Job) -> dict[str, Any]:
    return {slot: copy.deepcopy(getattr(job, slot)) for slot in Job.__slots__}


def reloaded(job: Job) -> Job:
    """A fresh copy of a job as the store would hand it back."""
    return Job(**{slot: getattr(job, slot) for slot in _STORED_SLOTS})


class Space:
    """The space actor's bookkeeping around the pure rules, without trio."""

    def __init__(self, default_backoff: RetryBackoff | None) -> None:
        self.now = START
        self.default_backoff = default_backoff
        self.jobs: dict[str, Job] = {}
        """Live jobs: the actor's memory."""
        self.stored: dict[str, Job] = {}
        """Final jobs, which left memory: only the store has them."""
        self.queue = ReadyQueue()
        self.timers = Timers()
        self.counts = dict.fromkeys(S, 0)
        self.seq = 0
        self.lease_ids = itertools.count(1)

    def backoff_for(self, job: Job) -> RetryBackoff | None:
        return job.retry_backoff or self.default_backoff

    def create(self, new: NewJob) -> tuple[Job, list[Event]]:
        self.seq += 1
        job = create_job(f"job-{self.seq}", "space", self.seq, new, self.now)
        self.jobs[job.id] = job
        self.counts[job.status] += 1
        events = lifecycle.created(job, self.now)
        self.file(job)
        return job, events

    def deliver(self, job: Job, *, ack: bool) -> list[Event]:
        old = job.status
        events = lifecycle.deliver(job, self.now, f"lease-{next(self.lease_ids)}")
        if ack:
            events += lifecycle.ack(job, self.now, None)
        self.change(job, old)
        return events

    def change(self, job: Job, old: JobStatus) -> None:
        """`SpaceActor._change`: account for a transition that just happened."""
        if job.status is not old:
            self.counts[old] -= 1
            self.counts[job.status] += 1
            if old is S.PENDING:
                self.queue.discard(job)
        self.file(job)

    def file(self, job: Job) -> None:
        """`SpaceActor._file`: the queue, the timer heap, or out of memory."""
        if job.status is S.PENDING:
            self.queue.push(job)
        elif job.status.final:
            self.jobs.pop(job.id, None)
            self.stored[job.id] = job
        self.timers.track(job)

    def find(self, job_id: str) -> Job:
        return self.jobs.get(job_id) or self.stored[job_id]


class Lifecycle(RuleBasedStateMachine):
    space: Space

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        """Every job id, in creation order."""
        self.history: dict[str, list[Event]] = {}
        """Each job's events, as the transitions returned them."""
        self.lowest_attempt: dict[str, int] = {}
        """The attempt number each job may not go below."""

    @initialize(default_backoff=backoffs)
    def open_space(self, default_backoff: RetryBackoff | None) -> None:
        self.space = Space(default_backoff)

    # ---------------------------------------------------------------- helpers

    @property
    def now(self) -> float:
        return self.space.now

    def pick(self, choice: tuple[str, int], accepted: frozenset[JobStatus]) -> Job | None:
        among, index = choice
        jobs = [self.space.find(job_id) for job_id in self.order]
        fit = [job for job in jobs if job.status in accepted]
        if among == "fit" and fit:
            jobs = fit
        return jobs[index % len(jobs)] if jobs else None

    def lease_for(self, job: Job, choice: str) -> str | None:
        if choice == "live":
            return job.lease_id
        if choice == "stale":
            past = [
                e.data["leaseId"]
                for e in self.history[job.id]
                if e.type is E.DELIVERED and isinstance(e.data, dict)
            ]
            stale = [lease for lease in past if lease != job.lease_id]
            return str(stale[-1]) if stale else "lease-never"
        if choice == "bogus":
            return "lease-never"
        return None

    def appended(self, job: Job, before: dict[str, Any], events: list[Event]) -> None:
        """The events a transition returned are the job's next ones, in order, stamped
        with now and the attempt the job is in; they join its history."""
        first = before["event_seq"] + 1
        assert [e.seq for e in events] == list(range(first, first + len(events)))
        assert job.event_seq == before["event_seq"] + len(events)
        for event in events:
            assert event.attempt_number == job.attempt_number
            assert event.created_at == self.now
        if events:
            assert job.updated_at == self.now
        self.history[job.id].extend(events)

    def call(
        self,
        job: Job,
        action: str,
        allowed: frozenset[JobStatus],
        lease: str | None,
        transition: Callable[[], list[Event]],
    ) -> tuple[JobStatus, list[Event]] | None:
        """Run one transition on ``job``: accepted exactly when its state is allowed and
        any lease named is the live one; refused, nothing changed. Returns the status
        before and the events, or None if refused."""
        before = snapshot(job)
        old = job.status
        accept = old in allowed and (lease is None or lease == job.lease_id)
        try:
            events = transition()
        except Conflict:
            assert not accept, f"{action} refused from {old} (lease {lease})"
            assert snapshot(job) == before, f"a refused {action} changed the job"
            return None
        assert accept, f"{action} accepted from {old} (lease {lease}, live {before['lease_id']})"
        assert job.id in self.space.jobs, "a final job's transitions go through a retry"
        self.appended(job, before, events)
        self.space.change(job, old)
        return old, events

    def types(self, events: list[Event]) -> list[EventType]:
        return [event.type for event in events]

    def failed_attempt(
        self, job: Job, attempt: int, events: list[Event], error: str, scheduled_for: float | None
    ) -> None:
        """What a fail or a run deadline did: a retry while attempts are left, else dead."""
        if attempt >= job.max_retries:
            assert self.types(events) == [E.DEAD]
            assert job.status is S.DEAD and job.attempt_number == attempt
            assert job.result == dumps({"error": error})
            return
        assert self.types(events) == [E.RETRIED]
        assert job.attempt_number == attempt + 1
        assert job.lease_id is None and job.progress is None
        backoff = self.space.backoff_for(job)
        delay = backoff.delay(job.attempt_number) if backoff is not None else 0.0
        if delay > 0:
            assert job.status is S.SCHEDULED and job.scheduled_for == self.now + delay
        else:
            assert job.status is S.PENDING and job.scheduled_for == scheduled_for
        data = events[0].data
        assert isinstance(data, dict) and data["attemptNumber"] == job.attempt_number

    # ------------------------------------------------------------------ rules

    @rule(
        name=st.sampled_from(NAMES),
        priority=st.integers(-2, 2),
        max_retries=st.integers(0, 3),
        timeout=st.integers(1, 5),
        delay=st.none() | st.sampled_from([0.5, 1.0, 4.0]),
        backoff=backoffs,
    )
    def create(
        self,
        name: str,
        priority: int,
        max_retries: int,
        timeout: int,
        delay: float | None,
        backoff: RetryBackoff | None,
    ) -> None:
        scheduled_for = None if delay is None else self.now + delay
        new = NewJob(
            name, "null", priority, max_retries, timeout, scheduled_for, None, None, None, backoff
        )
        job, events = self.space.create(new)
        self.order.append(job.id)
        self.history[job.id] = []
        self.lowest_attempt[job.id] = 0
        self.appended(job, {"event_seq": 0}, events)
        assert self.types(events) == [E.CREATED]
        assert job.status is (S.PENDING if delay is None else S.SCHEDULED)
        assert job.attempt_number == 0 and job.lease_id is None

    @rule(
        count=st.integers(1, 3),
        names=st.none() | st.sampled_from([("a",), ("b",), NAMES]),
        ack=st.booleans(),
    )
    def poll(self, count: int, names: tuple[str, ...] | None, ack: bool) -> None:
        for _ in range(count):
            ready = [
                job
                for job in self.space.jobs.values()
                if job.status is S.PENDING and (names is None or job.name in names)
            ]
            job = self.space.queue.pop(names)
            if job is None:
                assert not ready, "a ready job was left in the queue"
                return
            best = min(ready, key=lambda j: (-j.priority, j.seq))
            assert job is best, "a poll must take the highest priority, oldest first"
            before = snapshot(job)
            events = self.space.deliver(job, ack=ack)
            self.appended(job, before, events)
            expected = [E.DELIVERED, E.STARTED] if ack else [E.DELIVERED]
            assert self.types(events) == expected
            assert job.status is (S.RUNNING if ack else S.DELIVERED)
            assert job.lease_id is not None and job.lease_id != before["lease_id"]
            assert job.deadline == self.now + job.timeout_seconds
            assert job.attempt_number == before["attempt_number"]

    @rule(index=picks)
    def claim(self, index: tuple[str, int]) -> None:
        job = self.pick(index, frozenset({S.PENDING}))
        if job is None:
            return
        lease = f"lease-{next(self.space.lease_ids)}"
        done = self.call(
            job,
            "claim",
            frozenset({S.PENDING}),
            None,
            lambda: lifecycle.deliver(job, self.now, lease),
        )
        if done is not None:
            assert self.types(done[1]) == [E.DELIVERED]
            assert job.status is S.DELIVERED and job.lease_id == lease
            assert not job.in_queue

    @rule(index=picks, lease=leases)
    def ack(self, index: tuple[str, int], lease: str) -> None:
        job = self.pick(index, frozenset({S.DELIVERED}))
        if job is None:
            return
        named = self.lease_for(job, lease)
        done = self.call(
            job, "ack", frozenset({S.DELIVERED}), named, lambda: lifecycle.ack(job, self.now, named)
        )
        if done is not None:
            assert self.types(done[1]) == [E.STARTED]
            assert job.status is S.RUNNING and job.started_at == self.now
            assert job.deadline == self.now + job.timeout_seconds

    @rule(index=picks, lease=leases, kind=st.sampled_from(["progress", "checkpoint", "event"]))
    def report(self, index: tuple[str, int], lease: str, kind: str) -> None:
        job = self.pick(index, WORKING)
        if job is None:
            return
        named = self.lease_for(job, lease)
        old_deadline = job.deadline
        if kind == "progress":
            done = self.call(
                job,
                kind,
                WORKING,
                named,
                lambda: lifecycle.progress(job, self.now, PROGRESS, named),
            )
            expected = E.PROGRESS
        elif kind == "checkpoint":
            done = self.call(
                job,
                kind,
                WORKING,
                named,
                lambda: lifecycle.checkpoint(job, self.now, '{"at":1}', {"at": 1}, named),
            )
            expected = E.CHECKPOINT
        else:
            done = self.call(
                job,
                kind,
                WORKING,
                named,
                lambda: lifecycle.custom_event(job, self.now, "note", None, named),
            )
            expected = E.EVENT
        if done is not None:
            assert self.types(done[1]) == [expected]
            assert job.status is done[0], f"{kind} moved the job"
            if kind == "event":
                assert job.deadline == old_deadline
            else:
                assert job.deadline == self.now + job.timeout_seconds

    @rule(index=picks, lease=leases, seconds=st.none() | st.integers(1, 5))
    def keepalive(self, index: tuple[str, int], lease: str, seconds: int | None) -> None:
        job = self.pick(index, WORKING)
        if job is None:
            return
        named = self.lease_for(job, lease)
        done = self.call(
            job,
            "keepalive",
            WORKING,
            named,
            lambda: lifecycle.keepalive(job, self.now, seconds, named),
        )
        if done is not None:
            assert done[1] == [] and job.status is done[0]
            assert job.deadline == self.now + (seconds or job.timeout_seconds)

    @rule(index=picks, lease=leases)
    def complete(self, index: tuple[str, int], lease: str) -> None:
        job = self.pick(index, WORKING)
        if job is None:
            return
        named = self.lease_for(job, lease)
        attempt = job.attempt_number
        done = self.call(
            job,
            "complete",
            WORKING,
            named,
            lambda: lifecycle.complete(job, self.now, '"ok"', "ok", named),
        )
        if done is not None:
            assert self.types(done[1]) == [E.COMPLETED]
            assert job.status is S.COMPLETED and job.result == '"ok"'
            assert job.attempt_number == attempt and job.completed_at == self.now

    @rule(index=picks, lease=leases)
    def fail(self, index: tuple[str, int], lease: str) -> None:
        job = self.pick(index, WORKING)
        if job is None:
            return
        named = self.lease_for(job, lease)
        attempt, scheduled_for = job.attempt_number, job.scheduled_for
        backoff = self.space.backoff_for(job)
        done = self.call(
            job,
            "fail",
            WORKING,
            named,
            lambda: lifecycle.fail(job, self.now, "boom", named, backoff, dumps),
        )
        if done is not None:
            self.failed_attempt(job, attempt, done[1], "boom", scheduled_for)

    @rule(index=picks)
    def kill(self, index: tuple[str, int]) -> None:
        job = self.pick(index, LIVE)
        if job is None:
            return
        attempt = job.attempt_number
        done = self.call(
            job, "kill", LIVE, None, lambda: lifecycle.kill(job, self.now, "enough", dumps)
        )
        if done is not None:
            assert self.types(done[1]) == [E.KILLED]
            assert job.status is S.KILLED and job.attempt_number == attempt
            assert job.result == dumps({"reason": "enough"})

    @rule(index=picks)
    def retry(self, index: tuple[str, int]) -> None:
        job = self.pick(index, frozenset({S.DEAD, S.KILLED}))
        if job is None:
            return
        if job.id in self.space.stored:
            # `SpaceActor._retry`: only the store has a final job; its copy comes back.
            job = reloaded(job)
            before = snapshot(job)
            old = job.status
            try:
                events = lifecycle.retry(job, self.now)
            except Conflict:
                assert old is S.COMPLETED, f"retry refused from {old}"
                assert snapshot(job) == before, "a refused retry changed the job"
                return
            assert old in (S.DEAD, S.KILLED), f"retry accepted from {old}"
            del self.space.stored[job.id]
            self.space.jobs[job.id] = job
            self.appended(job, before, events)
            self.space.change(job, old)
        else:
            done = self.call(
                job,
                "retry",
                frozenset({S.DEAD, S.KILLED}),
                None,
                lambda: lifecycle.retry(job, self.now),
            )
            assert done is None, "a final job is never in memory"
            return
        assert self.types(events) == [E.RETRIED] and events[0].data == {"manual": True}
        assert job.status is S.PENDING and job.attempt_number == 0
        assert job.result is None and job.in_queue
        self.lowest_attempt[job.id] = 0

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 6.0]))
    def advance(self, seconds: float) -> None:
        """Time passes; the actor's wakeups handle what came due, a batch at a time."""
        space = self.space
        space.now += seconds
        while space.timers.next_at() <= self.now:
            for job in space.timers.due(self.now, EXPIRE_BATCH):
                assert job.deadline is not None and job.deadline <= self.now, "fired early"
                before = snapshot(job)
                old, attempt, scheduled_for = job.status, job.attempt_number, job.scheduled_for
                events = lifecycle.expire(job, self.now, space.backoff_for(job), dumps)
                self.appended(job, before, events)
                space.change(job, old)
                if old is S.SCHEDULED:
                    assert events == [] and job.status is S.PENDING
                elif old is S.DELIVERED:
                    assert self.types(events) == [E.DELIVERY_TIMEOUT]
                    assert job.status is S.PENDING and job.attempt_number == attempt
                    assert job.lease_id is None
                else:
                    assert old is S.RUNNING
                    self.failed_attempt(job, attempt, events, "timeout", scheduled_for)

    # ------------------------------------------------------------- invariants

    @invariant()
    def counts_match_statuses(self) -> None:
        space = self.space
        statuses = Counter(job.status for job in (*space.jobs.values(), *space.stored.values()))
        assert space.counts == {status: statuses[status] for status in S}
        assert all(job.status in LIVE for job in space.jobs.values())
        assert all(job.status.final for job in space.stored.values())

    @invariant()
    def queue_holds_exactly_the_pending_jobs(self) -> None:
        space = self.space
        queued = {job.id for job in space.jobs.values() if job.in_queue}
        pending = {job.id for job in space.jobs.values() if job.status is S.PENDING}
        assert queued == pending
        assert len(space.queue) == space.counts[S.PENDING]

    @invariant()
    def at_most_one_live_lease(self) -> None:
        live: dict[str, str] = {}
        for job in self.space.jobs.values():
            assert (job.lease_id is not None) == (job.status in WORKING), job
            if job.lease_id is not None:
                assert job.lease_id not in live, "one lease live for two jobs"
                live[job.lease_id] = job.id
        for job in self.space.stored.values():
            assert job.lease_id is None
        for job_id, events in self.history.items():
            leased = False
            for event in events:
                if event.type is E.DELIVERED:
                    assert not leased, f"two live leases on {job_id}: {events}"
                    leased = True
                elif event.type in _ENDS_LEASE:
                    leased = False
            assert leased == (self.space.find(job_id).status in WORKING)

    @invariant()
    def attempts_never_go_back(self) -> None:
        for job_id in self.order:
            job = self.space.find(job_id)
            assert job.attempt_number >= self.lowest_attempt[job_id], "an attempt went back"
            assert job.attempt_number <= job.max_retries
            self.lowest_attempt[job_id] = job.attempt_number
            # In the history too: only a manual retry starts the count again.
            attempt = 0
            for event in self.history[job_id]:
                if event.type is E.RETRIED and event.data == {"manual": True}:
                    assert event.attempt_number == 0
                else:
                    assert event.attempt_number >= attempt
                attempt = event.attempt_number

    @invariant()
    def histories_are_whole(self) -> None:
        for job_id in self.order:
            job = self.space.find(job_id)
            seqs = [event.seq for event in self.history[job_id]]
            assert seqs == list(range(1, job.event_seq + 1)), "a gap in a job's history"

    @invariant()
    def deadlines_are_kept(self) -> None:
        """Each state has its deadline, the heap fires no later than it, and no work
        that came due is left undone."""
        for job in self.space.jobs.values():
            if job.status is S.SCHEDULED:
                assert job.deadline is not None and job.deadline == job.scheduled_for
            elif job.status is S.PENDING:
                assert job.deadline is None
            else:
                assert job.deadline is not None
            if job.deadline is not None:
                assert job.timer_at is not None and job.timer_at <= job.deadline
                assert job.deadline > self.now, "a deadline passed unhandled"
        for job in self.space.stored.values():
            assert job.deadline is None


Lifecycle.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycle = Lifecycle.TestCase
