"""The space's rules as a pure state machine: each command applied to `LiveSpace` with
an explicit ``now``, and the effects it returns checked. No trio, no actor, no store."""

from __future__ import annotations

from typing import Any

import pytest

from emit.domain.commands import (
    AckJob,
    AppendLogs,
    ClaimJob,
    CompleteItem,
    CompleteJobs,
    CountJobs,
    CountPollers,
    CreateJobs,
    FailItem,
    FailJobs,
    KillJob,
    LogEntry,
    PollJobs,
    RecordCallback,
    ReleasePollers,
    RetryJob,
)
from emit.domain.job import Job
from emit.domain.model import EventType, JobStatus, LogLevel, NewJob, PollRequest
from emit.domain.records import Callback
from emit.domain.settings import SpaceSettings
from emit.domain.space import Effects, LiveSpace
from emit.domain.views import Delivery, JobView
from emit.errors import Conflict, InvalidRequest, NotFound

S = JobStatus
NOW = 1_800_000_000.0
SPACE = "01SPACE0000000000000000000"


class Caller:
    """Someone waiting for an answer."""

    def __init__(self) -> None:
        self.done = False


def space() -> LiveSpace:
    live = LiveSpace(SPACE)
    live.load(SpaceSettings(), {}, 0, {}, [])
    return live


def answer(effects: Effects, caller: Caller) -> Any:
    [found] = [a for c, a in effects.answers if c is caller]
    return found


def create(live: LiveSpace, *jobs: NewJob, now: float = NOW) -> list[JobView]:
    caller = Caller()
    effects = live.apply(CreateJobs(list(jobs)), now, caller)
    live.durable(effects)
    return [view for view, _ in answer(effects, caller)]


def poll(live: LiveSpace, count: int = 1, *, wait: float = 0, ack: bool = False) -> Any:
    caller = Caller()
    effects = live.apply(PollJobs(PollRequest(count, None, wait, ack)), NOW, caller)
    live.durable(effects)
    return answer(effects, caller)


def test_a_create_is_a_row_an_event_a_count_and_an_answer() -> None:
    live, caller = space(), Caller()
    effects = live.apply(CreateJobs([NewJob("send", '{"a":1}')]), NOW, caller)
    [(view, made)] = answer(effects, caller)
    assert made and view.status is S.PENDING and view.payload == {"a": 1}
    assert list(effects.inserted) == [view.id] and not effects.touched
    assert [e.type for e in effects.events[view.id]] == ["created"]
    assert effects.deltas == {S.PENDING: 1}
    assert live.counts[S.PENDING] == 1 and live.durable_counts[S.PENDING] == 0
    live.durable(effects)
    assert live.durable_counts[S.PENDING] == 1


def test_a_bad_batch_is_refused_whole_and_changes_nothing() -> None:
    live, caller = space(), Caller()
    past = NewJob("late", "null", scheduled_for=NOW - 1, idempotency_key="k")
    effects = live.apply(CreateJobs([NewJob("ok", "null"), past]), NOW, caller)
    error = answer(effects, caller)
    assert isinstance(error, InvalidRequest) and error.message.startswith("jobs[1]:")
    assert not effects.writes() and not live.jobs and live.seq == 0


def test_a_poll_delivers_in_priority_order_and_leases() -> None:
    live = space()
    low, high = create(live, NewJob("a", "1"), NewJob("a", "2", priority=5))
    [delivery] = poll(live)
    assert isinstance(delivery, Delivery) and delivery.id == high.id and delivery.lease_id
    assert live.jobs[high.id].status is S.DELIVERED
    assert live.counts[S.PENDING] == 1 and live.counts[S.DELIVERED] == 1
    assert [d.id for d in poll(live, 5, ack=True)] == [low.id]
    assert live.jobs[low.id].status is S.RUNNING


def test_a_parked_poll_is_answered_by_the_next_create() -> None:
    live, waiting = space(), Caller()
    parked = live.apply(PollJobs(PollRequest(1, None, 30, False)), NOW, waiting)
    assert parked.answers == [] and live.pollers() == 1
    caller = Caller()
    effects = live.apply(CreateJobs([NewJob("a", "null")]), NOW + 1, caller)
    [delivery] = answer(effects, waiting)
    assert delivery.name == "a" and live.pollers() == 0


def test_a_poll_whose_caller_left_takes_nothing() -> None:
    live = space()
    create(live, NewJob("a", "null"))
    gone = Caller()
    gone.done = True
    effects = live.apply(PollJobs(PollRequest(1, None, 0, False)), NOW, gone)
    assert answer(effects, gone) == [] and not effects.writes()
    assert live.counts[S.PENDING] == 1


def test_a_long_poll_ends_empty_when_its_wait_does() -> None:
    live, waiting = space(), Caller()
    live.apply(PollJobs(PollRequest(1, None, 30, False)), NOW, waiting)
    assert live.next_deadline() == NOW + 30
    assert live.expire(NOW + 29).answers == []
    assert answer(live.expire(NOW + 30), waiting) == []


def test_a_lease_not_acked_in_time_goes_back_to_pending() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null", timeout_seconds=10))
    poll(live)
    effects = live.expire(NOW + 10)
    assert [e.type for e in effects.events[job.id]] == ["delivery_timeout"]
    assert live.jobs[job.id].status is S.PENDING and effects.woken == []


def test_a_refused_transition_changes_nothing() -> None:
    live, caller = space(), Caller()
    [job] = create(live, NewJob("a", "null"))
    effects = live.apply(AckJob(job.id, None), NOW, caller)
    assert isinstance(answer(effects, caller), Conflict)
    assert not effects.writes() and live.jobs[job.id].status is S.PENDING


def test_a_job_that_ended_in_a_write_in_flight_is_known_without_the_store() -> None:
    live, caller = space(), Caller()
    [job] = create(live, NewJob("a", "null"))
    poll(live, ack=True)
    done = live.apply(CompleteJobs([CompleteItem(job.id, "1", 1, None)]), NOW, caller)
    assert job.id not in live.jobs and job.id in live.ended
    again = Caller()
    effects = live.apply(CompleteJobs([CompleteItem(job.id, "2", 2, None)]), NOW, again)
    assert effects.need == ()  # no store read: memory knows
    [refused] = answer(effects, again)
    assert isinstance(refused, Conflict) and "completed" in refused.message
    live.durable(done)
    assert job.id not in live.ended  # durable: the store answers from now on
    later = live.apply(CompleteJobs([CompleteItem(job.id, "2", 2, None)]), NOW, Caller())
    assert later.need == (job.id,)


def test_a_job_ended_again_stays_known_until_its_last_write_is_durable() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null"))
    killed = live.apply(KillJob(job.id, None), NOW, Caller())
    retried = live.apply(RetryJob(job.id), NOW, Caller())
    assert retried.need == () and job.id in live.jobs and job.id not in live.ended
    again = live.apply(KillJob(job.id, None), NOW, Caller())
    live.durable(killed)
    live.durable(retried)
    assert job.id in live.ended  # the second kill's write is still in flight
    back = live.apply(RetryJob(job.id), NOW, Caller())
    assert back.need == () and job.id in live.jobs
    live.durable(again)
    live.durable(back)
    assert job.id in live.jobs and not live.ended
    assert live.durable_counts == live.counts and live.counts[S.PENDING] == 1


def test_a_command_naming_a_job_only_the_store_has_asks_for_it_first() -> None:
    live = space()
    [live_job] = create(live, NewJob("a", "null"))
    poll(live, ack=True)
    stored = Job(
        id="01JOBSTORED000000000000000", space_id=SPACE, seq=9, name="a", payload="null",
        status=S.DEAD, priority=0, max_retries=0, timeout_seconds=60, created_at=NOW,
        updated_at=NOW, completed_at=NOW, result='{"error":"x"}',
    )  # fmt: skip
    caller = Caller()
    items = [CompleteItem(live_job.id, "1", 1, None), CompleteItem(stored.id, "1", 1, None)]
    first = live.apply(CompleteJobs(items), NOW, caller)
    assert first.need == (stored.id,) and not first.writes() and not first.answers
    assert live.jobs[live_job.id].status is S.RUNNING  # nothing changed yet
    effects = live.apply(CompleteJobs(items), NOW, caller, {stored.id: stored})
    done, refused = answer(effects, caller)
    assert isinstance(done, JobView) and done.status is S.COMPLETED
    assert isinstance(refused, Conflict) and "dead" in refused.message


def test_a_job_the_store_does_not_have_is_not_found() -> None:
    live, caller = space(), Caller()
    missing = "01JOBMISSING00000000000000"
    assert live.apply(KillJob(missing, None), NOW, caller).need == (missing,)
    effects = live.apply(KillJob(missing, None), NOW, caller, {missing: None})
    assert isinstance(answer(effects, caller), NotFound)


def test_a_dead_job_from_the_store_is_retried_back_into_memory() -> None:
    live, caller = space(), Caller()
    dead = Job(
        id="01JOBDEAD00000000000000000", space_id=SPACE, seq=3, name="a", payload="null",
        status=S.DEAD, priority=0, max_retries=0, attempt_number=0, timeout_seconds=60,
        created_at=NOW, updated_at=NOW, completed_at=NOW, result='{"error":"x"}',
    )  # fmt: skip
    live.counts[S.DEAD] = 1
    effects = live.apply(RetryJob(dead.id), NOW, caller, {dead.id: dead})
    view = answer(effects, caller)
    assert view.status is S.PENDING and live.jobs[dead.id] is dead
    assert effects.deltas == {S.DEAD: -1, S.PENDING: 1} and dead.id in effects.touched
    assert [d.id for d in poll(live)] == [dead.id]


def test_a_repeated_idempotency_key_answers_the_stored_job() -> None:
    live = space()
    [first] = create(live, NewJob("a", "null", idempotency_key="once"))
    poll(live, ack=True)
    live.durable(live.apply(CompleteJobs([CompleteItem(first.id, "1", 1, None)]), NOW, Caller()))
    caller = Caller()
    asked = live.apply(CreateJobs([NewJob("a", "null", idempotency_key="once")]), NOW, caller)
    assert asked.need == (first.id,)
    stored = live.jobs.get(first.id) or Job(
        id=first.id, space_id=SPACE, seq=1, name="a", payload="null", status=S.COMPLETED,
        priority=0, max_retries=3, timeout_seconds=300, created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    effects = live.apply(
        CreateJobs([NewJob("a", "null", idempotency_key="once")]), NOW, caller, {first.id: stored}
    )
    [(view, made)] = answer(effects, caller)
    assert not made and view.id == first.id and not effects.writes() and live.seq == 1


def test_a_webhook_noted_on_a_stored_job_keeps_it_in_memory_until_durable() -> None:
    # The note changes the job in a write of its own: until it is durable the store's
    # copy lacks that event, so the space must answer for the job from memory.
    live, caller = space(), Caller()
    dead = Job(
        id="01JOBDEAD00000000000000000", space_id=SPACE, seq=3, name="a", payload="null",
        status=S.DEAD, priority=0, max_retries=0, timeout_seconds=60, created_at=NOW,
        updated_at=NOW, completed_at=NOW, event_seq=2, result='{"error":"x"}',
    )  # fmt: skip
    callback = Callback(
        "01CALLBACK0000000000000000", dead.id, SPACE, "https://example.com/h", None, "{}", 1,
        NOW, "delivered", NOW,
    )  # fmt: skip
    noted = live.apply(
        RecordCallback(dead.id, EventType.CALLBACK_SENT, None, callback), NOW, caller,
        {dead.id: dead},
    )  # fmt: skip
    assert [e.seq for e in noted.events[dead.id]] == [3] and noted.outbox == [callback]
    retry = live.apply(RetryJob(dead.id), NOW, Caller())
    assert retry.need == ()  # memory knows the job as the note left it
    assert [e.seq for e in retry.events[dead.id]] == [4]
    live.durable(noted)
    assert dead.id in live.jobs  # retried: live again, whatever the note's write did


def test_a_noted_job_leaves_memory_once_the_note_is_durable() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null"))
    killed = live.apply(KillJob(job.id, None), NOW, Caller())
    callback = Callback(
        "01CALLBACK0000000000000000", job.id, SPACE, "https://example.com/h", None, "{}", 1,
        NOW, "delivered", NOW,
    )  # fmt: skip
    noted = live.apply(
        RecordCallback(job.id, EventType.CALLBACK_SENT, None, callback), NOW, Caller()
    )
    assert noted.need == () and job.id in noted.touched
    live.durable(killed)
    assert job.id in live.ended  # the note's write is still in flight
    assert live.apply(KillJob(job.id, None), NOW, Caller()).need == ()
    live.durable(noted)
    assert job.id not in live.ended
    assert live.apply(KillJob(job.id, None), NOW, Caller()).need == (job.id,)


def test_a_failed_attempt_retries_then_dies() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null", max_retries=1))
    for expected in (S.PENDING, S.DEAD):
        poll(live, ack=True)
        caller = Caller()
        effects = live.apply(FailJobs([FailItem(job.id, "boom", None)]), NOW, caller)
        [view] = answer(effects, caller)
        assert view.status is expected
    assert live.counts[S.DEAD] == 1 and live.counts[S.PENDING] == 0


def test_an_ended_job_with_a_callback_queues_its_webhook() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null", callback_url="https://example.com/hook"))
    effects = live.apply(KillJob(job.id, "stop"), NOW + 5, Caller())
    [callback] = effects.callbacks
    assert effects.outbox == [callback] and callback.job_id == job.id
    assert '"status":"killed"' in callback.body and callback.url == "https://example.com/hook"


def test_stream_events_are_collected_only_while_watched() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null"))
    assert live.apply(ClaimJob(job.id), NOW, Caller()).published == []
    live.watched = True
    effects = live.apply(AckJob(job.id, None), NOW, Caller())
    assert [(p.job_id, p.type, p.status) for p in effects.published] == [
        (job.id, "started", "running")
    ]
    logged = live.apply(
        AppendLogs(job.id, [LogEntry(LogLevel.INFO, "hi", None, None)], None), NOW, Caller()
    )
    [(job_id, line)] = logged.logs
    assert job_id == job.id and line.message == "hi" and line.ts == NOW
    assert [p.type for p in logged.published] == ["log"]


def test_releasing_pollers_answers_each_with_nothing() -> None:
    live = space()
    waiting = [Caller(), Caller()]
    for caller in waiting:
        live.apply(PollJobs(PollRequest(1, None, 30, False)), NOW, caller)
    counted = Caller()
    assert answer(live.apply(CountPollers(), NOW, counted), counted) == 2
    asker = Caller()
    effects = live.apply(ReleasePollers(), NOW, asker)
    assert answer(effects, asker) == 2
    assert all(answer(effects, caller) == [] for caller in waiting)


def test_give_back_returns_a_delivery_nobody_received() -> None:
    live = space()
    [job] = create(live, NewJob("a", "null"))
    [delivery] = poll(live)
    effects = live.give_back([(job.id, delivery.lease_id)], NOW)
    assert live.jobs[job.id].status is S.PENDING
    assert [e.data for e in effects.events[job.id]] == [{"reason": "caller_gone"}]
    assert live.give_back([(job.id, delivery.lease_id)], NOW).writes() is False


def test_counts_answer_the_live_counts() -> None:
    live, caller = space(), Caller()
    create(live, NewJob("a", "null"), NewJob("b", "null", scheduled_for=NOW + 60))
    counts = answer(live.apply(CountJobs(), NOW, caller), caller)
    assert counts[S.PENDING] == 1 and counts[S.SCHEDULED] == 1


def test_a_bug_leaves_nothing_to_write(monkeypatch: pytest.MonkeyPatch) -> None:
    live = space()
    [job] = create(live, NewJob("a", "null"))

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("emit.domain.lifecycle.kill", broken)
    with pytest.raises(RuntimeError):
        live.apply(KillJob(job.id, None), NOW, Caller())
    live.discard()
    assert not live.take().writes()


def test_a_sweep_deletes_stored_jobs_forgets_their_keys_and_counts_them_out() -> None:
    live = space()
    [done, back] = create(
        live, NewJob("a", "null", idempotency_key="one"), NewJob("a", "null", idempotency_key="two")
    )
    poll(live, 2, ack=True)
    completed = live.apply(
        CompleteJobs([CompleteItem(j.id, "1", 1, None) for j in (done, back)]), NOW, Caller()
    )
    live.durable(completed)
    dead = "01JOBDEAD00000000000000000"
    live.counts[S.DEAD] += 1
    # ``back`` was retried into memory since the sweep's read: it stays.
    live.jobs[back.id] = completed.touched[back.id]
    caller = Caller()
    expired = [(done.id, S.COMPLETED, "one"), (back.id, S.COMPLETED, "two"), (dead, S.DEAD, None)]
    effects = live.sweep(expired, caller)
    assert effects.deleted == [done.id, dead] and answer(effects, caller) == 2
    assert effects.deltas == {S.COMPLETED: -1, S.DEAD: -1}
    assert live.idempotency == {"two": back.id}
    # Until the delete is durable the store still has the job: it is gone already.
    retried = Caller()
    refused = live.apply(RetryJob(dead), NOW, retried)
    assert isinstance(answer(refused, retried), NotFound) and not refused.need
    assert live.sweep(expired, Caller()).deleted == []  # not twice
    live.durable(effects)
    assert live.sweeping == {}
    [again] = create(live, NewJob("a", "null", idempotency_key="one"))
    assert again.id != done.id
