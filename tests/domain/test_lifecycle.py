"""The job state machine (spec §3 and the "which state each call accepts" rule of §4).

Every transition, every refusal from every state (a refused call leaves every slot of
the job as it was), lease fencing, attempt counting, deadlines and retry backoff.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from emit.codec import dumps, loads
from emit.domain import lifecycle
from emit.domain.job import Job
from emit.domain.model import Event, EventType, JobStatus, Progress, RetryBackoff, validate_progress
from emit.errors import Conflict

S = JobStatus
NOW = 1_800_000_000.0
TIMEOUT = 30
ALL_STATES = tuple(JobStatus)
LIVE_STATES = (S.SCHEDULED, S.PENDING, S.DELIVERED, S.RUNNING)
FINAL_STATES = (S.COMPLETED, S.DEAD, S.KILLED)


# ------------------------------------------------------------------------------ helpers


def make_job(**overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "id": "01JOB",
        "space_id": "01SPACE",
        "seq": 1,
        "name": "email.send",
        "payload": '{"to":"a@example.com"}',
        "status": S.PENDING,
        "priority": 0,
        "max_retries": 3,
        "timeout_seconds": TIMEOUT,
        "created_at": NOW,
        "updated_at": NOW,
    }
    fields.update(overrides)
    return Job(**fields)


def result_of(job: Job) -> Any:
    """The job's result, decoded (it has one)."""
    assert job.result is not None
    return loads(job.result)


def job_in(status: JobStatus, **overrides: Any) -> Job:
    """A job brought into ``status`` by the real transitions (scheduled is made directly,
    as the create path does). The lease of a delivered or running job is "L1"."""
    if status is S.SCHEDULED:
        overrides.setdefault("scheduled_for", NOW + 60)
        overrides.setdefault("deadline", NOW + 60)
        return make_job(status=S.SCHEDULED, **overrides)
    if status is S.DEAD:
        overrides["max_retries"] = 0
    job = make_job(**overrides)
    if status is S.PENDING:
        return job
    if status is S.KILLED:
        lifecycle.kill(job, NOW, "stop", dumps)
        return job
    lifecycle.deliver(job, NOW, "L1")
    if status is S.DELIVERED:
        return job
    lifecycle.ack(job, NOW + 1, None)
    if status is S.RUNNING:
        return job
    if status is S.COMPLETED:
        lifecycle.complete(job, NOW + 2, '{"ok":true}', {"ok": True}, None)
    elif status is S.DEAD:
        lifecycle.fail(job, NOW + 2, "boom", None, None, dumps)
    assert job.status is status
    return job


def snapshot(job: Job) -> dict[str, Any]:
    """Every slot of the job, deep-copied so that in-place changes show up too."""
    return {slot: copy.deepcopy(getattr(job, slot)) for slot in Job.__slots__}


def progress_update(percent: float = 50, message: str = "half") -> Progress:
    return validate_progress(percent, message, None)


def run_once(job: Job, now: float, lease: str) -> None:
    lifecycle.deliver(job, now, lease)
    lifecycle.ack(job, now, lease)


# Every call a caller can make on one job, with the states it is accepted from.
Call = Callable[[Job], object]
CALLS: dict[str, tuple[Call, frozenset[JobStatus]]] = {
    "claim": (lambda j: lifecycle.deliver(j, NOW + 5, "L2"), frozenset({S.PENDING})),
    "ack": (lambda j: lifecycle.ack(j, NOW + 5, None), frozenset({S.DELIVERED})),
    "progress": (
        lambda j: lifecycle.progress(j, NOW + 5, progress_update(), None),
        frozenset({S.DELIVERED, S.RUNNING}),
    ),
    "checkpoint": (
        lambda j: lifecycle.checkpoint(j, NOW + 5, '{"page":2}', {"page": 2}, None),
        frozenset({S.DELIVERED, S.RUNNING}),
    ),
    "event": (
        lambda j: lifecycle.custom_event(j, NOW + 5, "note", {"x": 1}, None),
        frozenset({S.DELIVERED, S.RUNNING}),
    ),
    "logs": (lambda j: lifecycle.check_logs(j, None), frozenset({S.DELIVERED, S.RUNNING})),
    "keepalive": (
        lambda j: lifecycle.keepalive(j, NOW + 5, None, None),
        frozenset({S.DELIVERED, S.RUNNING}),
    ),
    "complete": (
        lambda j: lifecycle.complete(j, NOW + 5, "1", 1, None),
        frozenset({S.DELIVERED, S.RUNNING}),
    ),
    "fail": (
        lambda j: lifecycle.fail(j, NOW + 5, "boom", None, None, dumps),
        frozenset({S.DELIVERED, S.RUNNING}),
    ),
    "kill": (
        lambda j: lifecycle.kill(j, NOW + 5, "stop", dumps),
        frozenset(LIVE_STATES),
    ),
    "retry": (lambda j: lifecycle.retry(j, NOW + 5), frozenset({S.DEAD, S.KILLED})),
}

REFUSED = [
    pytest.param(name, state, id=f"{name}-from-{state}")
    for name, (_, allowed) in CALLS.items()
    for state in ALL_STATES
    if state not in allowed
]
ACCEPTED = [
    pytest.param(name, state, id=f"{name}-from-{state}")
    for name, (_, allowed) in CALLS.items()
    for state in ALL_STATES
    if state in allowed
]

# Calls that take a lease, each as a function of the lease named.
LEASED: dict[str, Callable[[Job, str | None], object]] = {
    "ack": lambda j, lease: lifecycle.ack(j, NOW + 5, lease),
    "progress": lambda j, lease: lifecycle.progress(j, NOW + 5, progress_update(), lease),
    "checkpoint": lambda j, lease: lifecycle.checkpoint(j, NOW + 5, "{}", {}, lease),
    "event": lambda j, lease: lifecycle.custom_event(j, NOW + 5, "note", None, lease),
    "logs": lambda j, lease: lifecycle.check_logs(j, lease),
    "keepalive": lambda j, lease: lifecycle.keepalive(j, NOW + 5, None, lease),
    "complete": lambda j, lease: lifecycle.complete(j, NOW + 5, "1", 1, lease),
    "fail": lambda j, lease: lifecycle.fail(j, NOW + 5, "boom", lease, None, dumps),
}
LEASED_STATES = [
    pytest.param(name, state, id=f"{name}-{state}")
    for name in LEASED
    for state in (S.DELIVERED, S.RUNNING)
    if state in CALLS[name][1]
]


# --------------------------------------------------------------------- the state tables


def test_the_helper_builds_every_state() -> None:
    for state in ALL_STATES:
        assert job_in(state).status is state


def test_final_states_are_completed_dead_and_killed() -> None:
    assert {s for s in ALL_STATES if s.final} == set(FINAL_STATES)
    assert not any(s.final for s in LIVE_STATES)


def test_status_compares_equal_to_its_wire_string() -> None:
    assert S.RUNNING == "running"  # type: ignore[comparison-overlap]  # a str enum: it does
    assert [str(s) for s in ALL_STATES] == [
        "scheduled",
        "pending",
        "delivered",
        "running",
        "completed",
        "dead",
        "killed",
    ]


@pytest.mark.parametrize(("name", "state"), REFUSED)
def test_a_call_from_a_state_that_does_not_accept_it_is_a_conflict_and_changes_nothing(
    name: str, state: JobStatus
) -> None:
    job = job_in(state)
    before = snapshot(job)
    with pytest.raises(Conflict) as info:
        CALLS[name][0](job)
    assert info.value.status == 409
    assert str(state) in info.value.message
    assert snapshot(job) == before


@pytest.mark.parametrize(("name", "state"), ACCEPTED)
def test_a_call_from_a_state_that_accepts_it_goes_through(name: str, state: JobStatus) -> None:
    job = job_in(state)
    CALLS[name][0](job)  # does not raise


@pytest.mark.parametrize("state", (S.PENDING, *FINAL_STATES))
def test_expire_refuses_a_state_without_a_deadline_and_changes_nothing(
    state: JobStatus,
) -> None:
    job = job_in(state)
    before = snapshot(job)
    with pytest.raises(AssertionError):
        lifecycle.expire(job, NOW + 1000, None, dumps)
    assert snapshot(job) == before


# ------------------------------------------------------------------------- transitions


def test_created_records_one_created_event_with_name_and_priority() -> None:
    job = make_job(priority=7)
    events = lifecycle.created(job, NOW)
    assert events == [Event(1, EventType.CREATED, 0, {"name": "email.send", "priority": 7}, NOW)]
    assert job.event_seq == 1
    assert job.status is S.PENDING


def test_a_scheduled_job_whose_time_comes_becomes_pending_without_an_event() -> None:
    job = job_in(S.SCHEDULED)
    events = lifecycle.expire(job, NOW + 60, None, dumps)
    assert events == []
    assert job.status is S.PENDING
    assert job.scheduled_for is None
    assert job.deadline is None
    assert job.attempt_number == 0
    assert job.event_seq == 0


def test_make_due_moves_scheduled_to_pending_and_clears_the_time() -> None:
    job = job_in(S.SCHEDULED)
    lifecycle.make_due(job)
    assert (job.status, job.scheduled_for, job.deadline) == (S.PENDING, None, None)


def test_claim_moves_pending_to_delivered_with_a_fresh_lease_and_the_ack_deadline() -> None:
    job = make_job()
    events = lifecycle.deliver(job, NOW + 3, "L1")
    assert job.status is S.DELIVERED
    assert job.lease_id == "L1"
    assert job.delivered_at == NOW + 3
    assert job.deadline == NOW + 3 + TIMEOUT
    assert job.updated_at == NOW + 3
    assert job.attempt_number == 0
    assert events == [Event(1, EventType.DELIVERED, 0, {"leaseId": "L1"}, NOW + 3)]


def test_a_new_delivery_never_shows_an_earlier_attempts_start() -> None:
    """startedAt is the attempt's own (spec §3: ack sets it): a retry delivered again and
    not yet acked has none, so it never reads as started before it was delivered."""
    job = job_in(S.RUNNING)  # attempt 0, started
    lifecycle.fail(job, NOW + 5, "boom", "L1", None, dumps)
    assert (job.status, job.started_at) == (S.PENDING, NOW + 1)
    lifecycle.deliver(job, NOW + 9, "L2")
    assert (job.attempt_number, job.delivered_at, job.started_at) == (1, NOW + 9, None)
    lifecycle.ack(job, NOW + 10, "L2")
    assert job.started_at == NOW + 10


def test_ack_moves_delivered_to_running_and_starts_the_run_deadline() -> None:
    job = job_in(S.DELIVERED)
    events = lifecycle.ack(job, NOW + 4, "L1")
    assert job.status is S.RUNNING
    assert job.started_at == NOW + 4
    assert job.deadline == NOW + 4 + TIMEOUT
    assert job.lease_id == "L1"
    assert [e.type for e in events] == [EventType.STARTED]
    assert events[0].data is None


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_progress_stores_the_update_and_restarts_the_deadline(state: JobStatus) -> None:
    job = job_in(state)
    update = validate_progress(40, "fetching", {"download": {"percent": 80}})
    events = lifecycle.progress(job, NOW + 10, update, "L1")
    wire = {"percent": 40, "message": "fetching", "subProgress": {"download": {"percent": 80}}}
    assert job.progress == wire
    assert job.deadline == NOW + 10 + TIMEOUT
    assert job.status is state
    assert len(events) == 1
    assert (events[0].type, events[0].data, events[0].created_at) == (
        EventType.PROGRESS,
        wire,
        NOW + 10,
    )


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_checkpoint_stores_the_state_and_restarts_the_deadline(state: JobStatus) -> None:
    job = job_in(state)
    events = lifecycle.checkpoint(job, NOW + 10, '{"page":3}', {"page": 3}, "L1")
    assert job.checkpoint == '{"page":3}'
    assert job.deadline == NOW + 10 + TIMEOUT
    assert job.status is state
    assert [(e.type, e.data) for e in events] == [(EventType.CHECKPOINT, {"page": 3})]


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_custom_event_is_recorded_without_moving_the_deadline(state: JobStatus) -> None:
    job = job_in(state)
    deadline = job.deadline
    events = lifecycle.custom_event(job, NOW + 10, "rows", {"n": 5}, "L1")
    assert job.deadline == deadline
    assert job.status is state
    assert job.updated_at == NOW + 10
    assert [(e.type, e.data) for e in events] == [
        (EventType.EVENT, {"type": "rows", "data": {"n": 5}})
    ]


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_keepalive_pushes_the_current_deadline_by_timeout_seconds_without_an_event(
    state: JobStatus,
) -> None:
    job = job_in(state)
    seq = job.event_seq
    events = lifecycle.keepalive(job, NOW + 20, None, "L1")
    assert events == []
    assert job.event_seq == seq
    assert job.deadline == NOW + 20 + TIMEOUT
    assert job.updated_at == NOW + 20
    assert job.status is state


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_keepalive_with_seconds_sets_the_deadline_to_now_plus_seconds(state: JobStatus) -> None:
    job = job_in(state)
    lifecycle.keepalive(job, NOW + 20, 3600, None)
    assert job.deadline == NOW + 20 + 3600
    lifecycle.keepalive(job, NOW + 21, 1, None)  # may also bring it in
    assert job.deadline == NOW + 22


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_complete_ends_the_job_with_the_result(state: JobStatus) -> None:
    job = job_in(state)
    events = lifecycle.complete(job, NOW + 9, '{"sent":true}', {"sent": True}, "L1")
    assert job.status is S.COMPLETED
    assert job.result == '{"sent":true}'
    assert job.completed_at == NOW + 9
    assert job.lease_id is None
    assert job.deadline is None
    assert job.status.final
    assert [(e.type, e.data) for e in events] == [(EventType.COMPLETED, {"result": {"sent": True}})]


def test_logs_are_accepted_while_delivered_or_running_and_record_no_event() -> None:
    for state in (S.DELIVERED, S.RUNNING):
        job = job_in(state)
        before = snapshot(job)
        lifecycle.check_logs(job, "L1")
        assert snapshot(job) == before


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_fail_with_attempts_left_requeues_with_the_next_attempt_number(
    state: JobStatus,
) -> None:
    job = job_in(state)
    lifecycle.progress(job, NOW + 2, progress_update(), None)
    events = lifecycle.fail(job, NOW + 5, "boom", "L1", None, dumps)
    assert job.status is S.PENDING
    assert job.attempt_number == 1
    assert job.lease_id is None
    assert job.progress is None
    assert job.deadline is None
    assert job.scheduled_for is None
    assert job.result is None
    assert job.completed_at is None
    assert len(events) == 1
    event = events[0]
    assert event.type is EventType.RETRIED
    assert event.data == {"error": "boom", "attemptNumber": 1}
    assert event.attempt_number == 1


def test_fail_with_no_attempts_left_makes_the_job_dead_with_the_error_as_result() -> None:
    job = job_in(S.RUNNING, max_retries=0)
    events = lifecycle.fail(job, NOW + 5, "boom", "L1", None, dumps)
    assert job.status is S.DEAD
    assert result_of(job) == {"error": "boom"}
    assert job.completed_at == NOW + 5
    assert job.lease_id is None
    assert job.deadline is None
    assert job.attempt_number == 0
    assert [(e.type, e.data, e.attempt_number) for e in events] == [
        (EventType.DEAD, {"error": "boom"}, 0)
    ]


def test_a_checkpoint_survives_a_failed_attempt_for_the_next_one() -> None:
    job = job_in(S.RUNNING)
    lifecycle.checkpoint(job, NOW + 2, '{"page":7}', {"page": 7}, None)
    lifecycle.fail(job, NOW + 3, "boom", None, None, dumps)
    assert job.checkpoint == '{"page":7}'
    lifecycle.deliver(job, NOW + 4, "L2")
    assert job.checkpoint == '{"page":7}'


def test_event_seq_counts_every_event_and_stamps_updated_at() -> None:
    job = make_job()
    events = lifecycle.created(job, NOW)
    events += lifecycle.deliver(job, NOW + 1, "L1")
    events += lifecycle.ack(job, NOW + 2, "L1")
    events += lifecycle.progress(job, NOW + 3, progress_update(), "L1")
    events += lifecycle.checkpoint(job, NOW + 4, "{}", {}, "L1")
    events += lifecycle.custom_event(job, NOW + 5, "x", None, "L1")
    events += lifecycle.complete(job, NOW + 6, "null", None, "L1")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.created_at for e in events] == [NOW + i for i in range(7)]
    assert job.event_seq == 7
    assert job.updated_at == NOW + 6


# ---------------------------------------------------------------------------- deadlines


def test_a_missed_ack_deadline_requeues_with_the_same_attempt_number() -> None:
    job = job_in(S.DELIVERED, max_retries=0)
    events = lifecycle.expire(job, NOW + TIMEOUT, None, dumps)
    assert job.status is S.PENDING
    assert job.attempt_number == 0
    assert job.lease_id is None
    assert job.deadline is None
    assert [(e.type, e.data, e.attempt_number) for e in events] == [
        (EventType.DELIVERY_TIMEOUT, None, 0)
    ]


def test_missed_ack_deadlines_never_use_up_attempts() -> None:
    job = make_job(max_retries=0)
    for i in range(10):
        lifecycle.deliver(job, NOW + i, f"L{i}")
        lifecycle.expire(job, NOW + i + TIMEOUT, None, dumps)
    assert job.status is S.PENDING
    assert job.attempt_number == 0


def test_a_missed_ack_deadline_after_attempts_keeps_the_current_attempt_number() -> None:
    job = job_in(S.RUNNING)
    lifecycle.fail(job, NOW + 2, "boom", None, None, dumps)
    lifecycle.deliver(job, NOW + 3, "L2")
    events = lifecycle.expire(job, NOW + 3 + TIMEOUT, None, dumps)
    assert job.attempt_number == 1
    assert events[0].attempt_number == 1


def test_a_missed_run_deadline_is_a_failed_attempt_with_error_timeout() -> None:
    job = job_in(S.RUNNING)
    events = lifecycle.expire(job, NOW + 1 + TIMEOUT, None, dumps)
    assert job.status is S.PENDING
    assert job.attempt_number == 1
    assert job.lease_id is None
    assert [(e.type, e.data) for e in events] == [
        (EventType.RETRIED, {"error": "timeout", "attemptNumber": 1})
    ]


def test_a_missed_run_deadline_on_the_last_attempt_makes_the_job_dead() -> None:
    job = job_in(S.RUNNING, max_retries=0)
    events = lifecycle.expire(job, NOW + 1 + TIMEOUT, None, dumps)
    assert job.status is S.DEAD
    assert result_of(job) == {"error": "timeout"}
    assert [(e.type, e.data) for e in events] == [(EventType.DEAD, {"error": "timeout"})]


def test_a_missed_run_deadline_backs_off_like_a_fail() -> None:
    job = job_in(S.RUNNING)
    backoff = RetryBackoff(5, 2, 60)
    lifecycle.expire(job, NOW + 100, backoff, dumps)
    assert job.status is S.SCHEDULED
    assert job.scheduled_for == job.deadline == NOW + 105


# ------------------------------------------------------------------------ lease fencing


@pytest.mark.parametrize(("name", "state"), LEASED_STATES)
def test_a_stale_lease_is_a_conflict_and_changes_nothing(name: str, state: JobStatus) -> None:
    job = job_in(state)
    before = snapshot(job)
    with pytest.raises(Conflict, match="stale"):
        LEASED[name](job, "L0")
    assert snapshot(job) == before


@pytest.mark.parametrize(("name", "state"), LEASED_STATES)
def test_the_live_lease_is_accepted(name: str, state: JobStatus) -> None:
    LEASED[name](job_in(state), "L1")


@pytest.mark.parametrize(("name", "state"), LEASED_STATES)
def test_no_lease_is_judged_by_state_alone(name: str, state: JobStatus) -> None:
    LEASED[name](job_in(state), None)


def test_a_lease_goes_stale_when_the_job_is_delivered_again_after_an_ack_timeout() -> None:
    job = make_job()
    lifecycle.deliver(job, NOW, "L1")
    lifecycle.expire(job, NOW + TIMEOUT, None, dumps)
    lifecycle.deliver(job, NOW + TIMEOUT + 1, "L2")
    before = snapshot(job)
    for name in LEASED:
        with pytest.raises(Conflict):
            LEASED[name](job, "L1")
        assert snapshot(job) == before
    lifecycle.ack(job, NOW + TIMEOUT + 2, "L2")
    lifecycle.complete(job, NOW + TIMEOUT + 3, "1", 1, "L2")
    assert job.status is S.COMPLETED


def test_a_lease_goes_stale_after_a_failed_attempt_and_redelivery() -> None:
    job = job_in(S.RUNNING)
    lifecycle.fail(job, NOW + 2, "boom", "L1", None, dumps)
    lifecycle.deliver(job, NOW + 3, "L2")
    with pytest.raises(Conflict):
        lifecycle.fail(job, NOW + 4, "late", "L1", None, dumps)
    assert job.attempt_number == 1
    assert job.status is S.DELIVERED


def test_a_lease_named_on_a_job_without_a_lease_is_refused() -> None:
    job = job_in(S.RUNNING)
    lifecycle.kill(job, NOW + 2, None, dumps)
    with pytest.raises(Conflict):
        lifecycle.complete(job, NOW + 3, "1", 1, "L1")


def test_every_delivery_holds_exactly_the_lease_it_was_given() -> None:
    job = make_job()
    for i in range(3):
        lifecycle.deliver(job, NOW + 100 * i, f"L{i}")
        assert job.lease_id == f"L{i}"
        lifecycle.expire(job, NOW + 100 * i + TIMEOUT, None, dumps)
        assert job.lease_id is None


# --------------------------------------------------------------------- attempt counting


@pytest.mark.parametrize("max_retries", [0, 1, 3, 25])
def test_a_job_runs_at_most_max_retries_plus_one_times(max_retries: int) -> None:
    job = make_job(max_retries=max_retries)
    runs: list[int] = []
    t = NOW
    while not job.status.final:
        assert job.status is S.PENDING
        t += 1
        delivered = lifecycle.deliver(job, t, f"L{t}")
        runs.append(delivered[0].attempt_number)
        lifecycle.ack(job, t, f"L{t}")
        events = lifecycle.fail(job, t, f"boom {len(runs)}", f"L{t}", None, dumps)
    assert runs == list(range(max_retries + 1))
    assert job.status is S.DEAD
    assert job.attempt_number == max_retries
    assert result_of(job) == {"error": f"boom {max_retries + 1}"}
    assert [(e.type, e.data) for e in events] == [
        (EventType.DEAD, {"error": f"boom {max_retries + 1}"})
    ]


def test_failing_without_ack_uses_up_an_attempt_too() -> None:
    job = make_job(max_retries=1)
    lifecycle.deliver(job, NOW, "L1")
    lifecycle.fail(job, NOW + 1, "boom", "L1", None, dumps)
    assert (job.status, job.attempt_number) == (S.PENDING, 1)
    lifecycle.deliver(job, NOW + 2, "L2")
    lifecycle.fail(job, NOW + 3, "boom", "L2", None, dumps)
    assert job.status is S.DEAD


def test_a_mix_of_fails_and_run_timeouts_counts_attempts_together() -> None:
    job = make_job(max_retries=2)
    run_once(job, NOW, "L1")
    lifecycle.fail(job, NOW + 1, "boom", None, None, dumps)
    run_once(job, NOW + 2, "L2")
    lifecycle.expire(job, NOW + 2 + TIMEOUT, None, dumps)
    run_once(job, NOW + 100, "L3")
    events = lifecycle.expire(job, NOW + 100 + TIMEOUT, None, dumps)
    assert job.status is S.DEAD
    assert events[0].data == {"error": "timeout"}
    assert events[0].attempt_number == 2


# ------------------------------------------------------------------------ retry backoff


def test_without_any_backoff_a_retry_is_immediate() -> None:
    job = job_in(S.RUNNING)
    events = lifecycle.fail(job, NOW + 5, "boom", None, None, dumps)
    assert job.status is S.PENDING
    assert job.scheduled_for is None
    assert job.deadline is None
    assert events[0].data == {"error": "boom", "attemptNumber": 1}  # no delaySeconds


def test_a_job_backing_off_is_scheduled_with_scheduled_for_set() -> None:
    job = job_in(S.RUNNING, retry_backoff=RetryBackoff(10, 2, 3600))
    events = lifecycle.fail(job, NOW + 5, "boom", "L1", None, dumps)
    assert job.status is S.SCHEDULED
    assert job.scheduled_for == NOW + 15
    assert job.deadline == NOW + 15
    assert job.lease_id is None
    assert job.attempt_number == 1
    assert events[0].data == {"error": "boom", "attemptNumber": 1, "delaySeconds": 10}


def test_backoff_grows_by_factor_per_retry_and_is_capped_at_max_seconds() -> None:
    job = make_job(max_retries=5, retry_backoff=RetryBackoff(10, 3, 100))
    delays: list[float] = []
    t = NOW
    for i in range(5):
        run_once(job, t, f"L{i}")
        events = lifecycle.fail(job, t, "boom", None, None, dumps)
        data = events[0].data
        assert isinstance(data, dict)
        delay = data["delaySeconds"]
        assert isinstance(delay, int | float)
        delays.append(delay)
        assert job.scheduled_for == t + delays[-1]
        t = job.scheduled_for
        lifecycle.expire(job, t, None, dumps)  # due: back to pending
        assert job.status is S.PENDING
    assert delays == [10, 30, 90, 100, 100]


def test_the_space_default_backoff_applies_when_the_job_has_none() -> None:
    job = job_in(S.RUNNING)
    lifecycle.fail(job, NOW + 5, "boom", None, RetryBackoff(7, 2, 60), dumps)
    assert job.status is S.SCHEDULED
    assert job.scheduled_for == NOW + 12


def test_the_job_backoff_wins_over_the_space_default() -> None:
    job = job_in(S.RUNNING, retry_backoff=RetryBackoff(3, 2, 60))
    lifecycle.fail(job, NOW + 5, "boom", None, RetryBackoff(100, 2, 600), dumps)
    assert job.scheduled_for == NOW + 8


def test_a_job_backoff_of_zero_is_immediate_even_with_a_space_default() -> None:
    job = job_in(S.RUNNING, retry_backoff=RetryBackoff(0, 2, 0))
    lifecycle.fail(job, NOW + 5, "boom", None, RetryBackoff(100, 2, 600), dumps)
    assert job.status is S.PENDING
    assert job.scheduled_for is None


def test_a_backing_off_job_comes_due_as_pending_and_runs_the_next_attempt() -> None:
    job = job_in(S.RUNNING, retry_backoff=RetryBackoff(10, 2, 3600))
    lifecycle.fail(job, NOW + 5, "boom", None, None, dumps)
    assert lifecycle.expire(job, NOW + 15, None, dumps) == []
    assert (job.status, job.scheduled_for, job.deadline) == (S.PENDING, None, None)
    events = lifecycle.deliver(job, NOW + 16, "L2")
    assert events[0].attempt_number == 1


def test_a_job_dies_instead_of_backing_off_when_no_attempts_are_left() -> None:
    job = job_in(S.RUNNING, max_retries=0, retry_backoff=RetryBackoff(10, 2, 3600))
    lifecycle.fail(job, NOW + 5, "boom", None, None, dumps)
    assert job.status is S.DEAD
    assert job.deadline is None


def test_retry_backoff_delay_formula() -> None:
    backoff = RetryBackoff(2, 3, 50)
    assert [backoff.delay(n) for n in range(1, 6)] == [2, 6, 18, 50, 50]
    assert backoff.to_wire() == {"initialSeconds": 2, "factor": 3, "maxSeconds": 50}


# ------------------------------------------------------------------------------- kill


@pytest.mark.parametrize("state", LIVE_STATES)
def test_kill_ends_a_job_from_every_live_state(state: JobStatus) -> None:
    job = job_in(state)
    events = lifecycle.kill(job, NOW + 50, "no longer needed", dumps)
    assert job.status is S.KILLED
    assert result_of(job) == {"reason": "no longer needed"}
    assert job.completed_at == NOW + 50
    assert job.lease_id is None
    assert job.deadline is None
    assert [(e.type, e.data) for e in events] == [
        (EventType.KILLED, {"reason": "no longer needed"})
    ]


def test_kill_without_a_reason_records_a_null_reason() -> None:
    job = make_job()
    events = lifecycle.kill(job, NOW, None, dumps)
    assert result_of(job) == {"reason": None}
    assert events[0].data == {"reason": None}


def test_a_killed_job_refuses_the_old_lease() -> None:
    job = job_in(S.RUNNING)
    lifecycle.kill(job, NOW + 2, None, dumps)
    before = snapshot(job)
    for name in LEASED:
        with pytest.raises(Conflict):
            LEASED[name](job, "L1")
        with pytest.raises(Conflict):
            LEASED[name](job, None)
    assert snapshot(job) == before


def test_a_job_killed_while_backing_off_keeps_its_attempt_number() -> None:
    job = job_in(S.RUNNING, retry_backoff=RetryBackoff(10, 2, 60))
    lifecycle.fail(job, NOW + 2, "boom", None, None, dumps)
    lifecycle.kill(job, NOW + 3, None, dumps)
    assert (job.status, job.attempt_number, job.deadline) == (S.KILLED, 1, None)


# ------------------------------------------------------------------------ manual retry


def test_manual_retry_of_a_dead_job_resets_attempts_and_returns_it_to_pending() -> None:
    job = make_job(max_retries=2)
    for i in range(3):
        run_once(job, NOW + i, f"L{i}")
        lifecycle.fail(job, NOW + i, "boom", None, None, dumps)
    assert (job.status, job.attempt_number) == (S.DEAD, 2)
    events = lifecycle.retry(job, NOW + 10)
    assert job.status is S.PENDING
    assert job.attempt_number == 0
    assert job.result is None
    assert job.progress is None
    assert job.completed_at is None
    assert job.deadline is None
    assert job.scheduled_for is None
    assert job.lease_id is None
    assert [(e.type, e.data, e.attempt_number) for e in events] == [
        (EventType.RETRIED, {"manual": True}, 0)
    ]


def test_a_manually_retried_job_gets_all_its_attempts_again() -> None:
    job = make_job(max_retries=2)
    for i in range(3):
        run_once(job, NOW + i, f"L{i}")
        lifecycle.fail(job, NOW + i, "boom", None, None, dumps)
    assert job.status is S.DEAD
    lifecycle.retry(job, NOW + 10)
    attempts: list[int] = []
    while not job.status.final:
        t = NOW + 11 + len(attempts)
        attempts.append(lifecycle.deliver(job, t, f"R{t}")[0].attempt_number)
        lifecycle.fail(job, t, "boom", None, None, dumps)
    assert attempts == [0, 1, 2]


@pytest.mark.parametrize("state", LIVE_STATES)
def test_manual_retry_of_a_job_killed_from_any_state_makes_it_pending_again(
    state: JobStatus,
) -> None:
    job = job_in(state, retry_backoff=RetryBackoff(10, 2, 60))
    if state is S.RUNNING:
        lifecycle.fail(job, NOW + 2, "boom", None, None, dumps)  # now scheduled, attempt 1
        lifecycle.make_due(job)
        run_once(job, NOW + 20, "L2")
    lifecycle.kill(job, NOW + 30, "oops", dumps)
    lifecycle.retry(job, NOW + 31)
    assert job.status is S.PENDING
    assert job.attempt_number == 0
    assert job.scheduled_for is None
    assert job.deadline is None
    assert job.result is None
    lifecycle.deliver(job, NOW + 32, "L9")  # and it can be claimed again


def test_a_completed_job_cannot_be_retried() -> None:
    job = job_in(S.COMPLETED)
    before = snapshot(job)
    with pytest.raises(Conflict):
        lifecycle.retry(job, NOW + 10)
    assert snapshot(job) == before


# ---------------------------------------------------------------------- ack with poll


def test_deliver_then_ack_at_once_gives_a_running_job_with_both_events() -> None:
    job = make_job()
    events = lifecycle.deliver(job, NOW, "L1") + lifecycle.ack(job, NOW, None)
    assert job.status is S.RUNNING
    assert job.lease_id == "L1"
    assert [e.type for e in events] == [EventType.DELIVERED, EventType.STARTED]
    assert job.deadline == NOW + TIMEOUT


@pytest.mark.parametrize("state", [S.DELIVERED, S.RUNNING])
def test_a_delivery_nobody_received_goes_back_to_pending_without_spending_an_attempt(
    state: JobStatus,
) -> None:
    job = job_in(state, max_retries=0)
    events = lifecycle.give_back(job, NOW + 2, "L1")
    assert job.status is S.PENDING and job.attempt_number == 0
    assert job.lease_id is None and job.deadline is None and job.started_at is None
    assert [(e.type, e.data, e.attempt_number) for e in events] == [
        (EventType.DELIVERY_TIMEOUT, {"reason": "caller_gone"}, 0)
    ]


@pytest.mark.parametrize("state", ALL_STATES)
def test_only_the_delivery_it_was_given_goes_back(state: JobStatus) -> None:
    job = job_in(state)
    if state in (S.DELIVERED, S.RUNNING):
        lifecycle.expire(job, NOW + 2 * TIMEOUT, None, dumps)  # moved on from lease L1
        if job.status is S.PENDING:
            lifecycle.deliver(job, NOW + 2 * TIMEOUT, "L2")
    before = snapshot(job)
    with pytest.raises(Conflict):
        lifecycle.give_back(job, NOW + 3 * TIMEOUT, "L1")
    assert snapshot(job) == before
