"""The deadline heap of a space: due order, later deadlines re-filed rather than pushed,
earlier deadlines pushed, bounded entries per job, and the batch limit."""

from __future__ import annotations

import itertools
import math
from typing import Any

from emit.codec import dumps
from emit.domain import lifecycle
from emit.domain.job import Job
from emit.domain.model import JobStatus, RetryBackoff, validate_progress
from emit.domain.timers import Timers

NOW = 1_800_000_000.0
TIMEOUT = 30
_seq = itertools.count(1)


def make_job(deadline: float | None = None, **extra: Any) -> Job:
    seq = next(_seq)
    return Job(
        id=f"job-{seq}",
        space_id="space",
        seq=seq,
        name="a",
        payload="null",
        status=JobStatus.PENDING,
        priority=0,
        max_retries=3,
        timeout_seconds=TIMEOUT,
        created_at=NOW,
        updated_at=NOW,
        deadline=deadline,
        **extra,
    )


def tracked(*jobs: Job) -> Timers:
    timers = Timers()
    for job in jobs:
        timers.track(job)
    return timers


# -------------------------------------------------------------------------- basics


def test_no_entries_means_nothing_is_due_and_the_next_time_is_infinite() -> None:
    timers = Timers()
    assert len(timers) == 0
    assert timers.next_at() == math.inf
    assert timers.due(NOW + 1e9, 100) == []


def test_a_job_without_a_deadline_is_not_tracked() -> None:
    job = make_job(None)
    timers = tracked(job)
    assert len(timers) == 0
    assert job.timer_at is None


def test_next_at_is_the_earliest_deadline() -> None:
    timers = tracked(make_job(NOW + 30), make_job(NOW + 10), make_job(NOW + 20))
    assert timers.next_at() == NOW + 10


def test_a_job_is_not_due_before_its_deadline_and_is_due_at_it() -> None:
    job = make_job(NOW + 10)
    timers = tracked(job)
    assert timers.due(NOW + 9.999, 10) == []
    assert len(timers) == 1
    assert timers.due(NOW + 10, 10) == [job]
    assert len(timers) == 0
    assert job.timer_at is None


def test_due_jobs_come_in_deadline_order() -> None:
    jobs = [make_job(NOW + d) for d in (5, 1, 4, 2, 3)]
    timers = tracked(*jobs)
    assert [j.deadline for j in timers.due(NOW + 100, 100)] == [NOW + d for d in (1, 2, 3, 4, 5)]


def test_equal_deadlines_come_in_the_order_they_were_tracked() -> None:
    jobs = [make_job(NOW + 5) for _ in range(5)]
    assert tracked(*jobs).due(NOW + 5, 10) == jobs


def test_only_jobs_whose_deadline_passed_are_returned() -> None:
    early, late = make_job(NOW + 1), make_job(NOW + 100)
    timers = tracked(late, early)
    assert timers.due(NOW + 50, 10) == [early]
    assert timers.next_at() == NOW + 100


def test_tracking_the_same_deadline_twice_keeps_one_entry() -> None:
    job = make_job(NOW + 5)
    timers = tracked(job, job, job)
    assert len(timers) == 1
    assert timers.due(NOW + 5, 10) == [job]


# ----------------------------------------------------------------- moving the deadline


def test_a_later_deadline_pushes_no_new_entry() -> None:
    job = make_job(NOW + 10)
    timers = tracked(job)
    job.deadline = NOW + 40
    timers.track(job)
    assert len(timers) == 1
    assert job.timer_at == NOW + 10
    assert timers.next_at() == NOW + 10


def test_a_later_deadline_is_refiled_when_the_old_entry_fires() -> None:
    job = make_job(NOW + 10)
    timers = tracked(job)
    job.deadline = NOW + 40
    timers.track(job)
    assert timers.due(NOW + 10, 10) == []  # fired, saw the later deadline
    assert len(timers) == 1
    assert job.timer_at == NOW + 40
    assert timers.next_at() == NOW + 40
    assert timers.due(NOW + 39, 10) == []
    assert timers.due(NOW + 40, 10) == [job]
    assert len(timers) == 0


def test_a_deadline_moved_later_several_times_is_refiled_once_per_firing() -> None:
    job = make_job(NOW + 10)
    timers = tracked(job)
    job.deadline = NOW + 200
    for _ in range(5):
        timers.track(job)
    assert timers.due(NOW + 100, 10) == []
    assert len(timers) == 1
    assert timers.due(NOW + 200, 10) == [job]


def test_an_earlier_deadline_pushes_an_entry_that_fires_at_the_earlier_time() -> None:
    job = make_job(NOW + 100)
    timers = tracked(job)
    job.deadline = NOW + 10
    timers.track(job)
    assert len(timers) == 2
    assert job.timer_at == NOW + 10
    assert timers.next_at() == NOW + 10
    assert timers.due(NOW + 10, 10) == [job]


def test_the_superseded_later_entry_never_returns_the_job_a_second_time() -> None:
    job = make_job(NOW + 100)
    timers = tracked(job)
    job.deadline = NOW + 10
    timers.track(job)
    assert timers.due(NOW + 1000, 10) == [job]
    assert len(timers) == 0


def test_a_superseded_entry_is_dropped_after_the_job_was_handled() -> None:
    job = make_job(NOW + 100)
    timers = tracked(job)
    job.deadline = NOW + 10
    timers.track(job)
    assert timers.due(NOW + 10, 10) == [job]
    job.deadline = NOW + 500  # handled: the job got a new, later deadline
    timers.track(job)
    assert timers.due(NOW + 100, 10) == []  # the stale entry at +100 is dropped
    assert timers.due(NOW + 500, 10) == [job]
    assert len(timers) == 0


def test_an_entry_for_a_job_that_lost_its_deadline_is_dropped() -> None:
    job = make_job(NOW + 10)
    timers = tracked(job)
    job.deadline = None
    assert timers.due(NOW + 10, 10) == []
    assert len(timers) == 0
    assert job.timer_at is None


def test_a_job_that_ended_and_was_restarted_keeps_a_single_live_entry() -> None:
    job = make_job(NOW + 10)
    timers = tracked(job)
    job.deadline = None  # ended before its entry fired
    job.deadline = NOW + 20  # ... and got a new deadline later than the entry
    timers.track(job)
    assert len(timers) == 1
    assert timers.due(NOW + 10, 10) == []
    assert timers.due(NOW + 20, 10) == [job]


# -------------------------------------------------------------------------- the limit


def test_the_limit_caps_one_batch_and_the_rest_come_next_time_in_order() -> None:
    jobs = [make_job(NOW + i) for i in range(5)]
    timers = tracked(*reversed(jobs))
    assert timers.due(NOW + 10, 2) == jobs[:2]
    assert len(timers) == 3
    assert timers.due(NOW + 10, 2) == jobs[2:4]
    assert timers.due(NOW + 10, 2) == jobs[4:]
    assert timers.due(NOW + 10, 2) == []


def test_a_limit_of_zero_takes_nothing() -> None:
    job = make_job(NOW)
    timers = tracked(job)
    assert timers.due(NOW + 10, 0) == []
    assert len(timers) == 1
    assert timers.due(NOW + 10, 1) == [job]


def test_dropped_and_refiled_entries_do_not_count_against_the_limit() -> None:
    gone, moved, due = make_job(NOW + 1), make_job(NOW + 2), make_job(NOW + 3)
    timers = tracked(gone, moved, due)
    gone.deadline = None
    moved.deadline = NOW + 1000
    assert timers.due(NOW + 10, 1) == [due]


# ---------------------------------------------------------- with the real lifecycle


def test_many_progress_updates_keep_one_entry_per_job() -> None:
    job = make_job()
    timers = Timers()
    lifecycle.deliver(job, NOW, "L1")
    timers.track(job)
    lifecycle.ack(job, NOW, "L1")
    timers.track(job)
    for i in range(1, 10_001):
        t = NOW + i * 0.01
        lifecycle.progress(job, t, validate_progress(i % 100, "working", None), "L1")
        timers.track(job)
        lifecycle.keepalive(job, t, None, "L1")
        timers.track(job)
    assert len(timers) == 1
    assert timers.due(NOW + TIMEOUT, 10) == []  # the first entry fires and is re-filed
    assert len(timers) == 1
    deadline = job.deadline
    assert deadline is not None
    assert timers.due(deadline, 10) == [job]


def test_short_keepalives_stay_bounded_too() -> None:
    job = make_job()
    timers = Timers()
    lifecycle.deliver(job, NOW, "L1")
    lifecycle.ack(job, NOW, "L1")
    timers.track(job)
    for i in range(1, 1001):
        lifecycle.keepalive(job, NOW + i * 0.1, 1, "L1")
        timers.track(job)
    assert len(timers) <= 2


def test_a_run_deadline_then_backoff_then_due_flows_through_the_heap() -> None:
    job = make_job(retry_backoff=RetryBackoff(5, 2, 60))
    timers = Timers()
    lifecycle.deliver(job, NOW, "L1")
    lifecycle.ack(job, NOW, "L1")
    timers.track(job)

    (expired,) = timers.due(NOW + TIMEOUT, 10)
    lifecycle.expire(expired, NOW + TIMEOUT, None, dumps)
    timers.track(expired)
    assert job.status is JobStatus.SCHEDULED
    assert timers.next_at() == NOW + TIMEOUT + 5

    (due,) = timers.due(NOW + TIMEOUT + 5, 10)
    lifecycle.expire(due, NOW + TIMEOUT + 5, None, dumps)
    timers.track(due)
    # (mypy keeps the narrowing to SCHEDULED from before the expiry)
    assert job.status is JobStatus.PENDING  # type: ignore[comparison-overlap]
    assert len(timers) == 0
