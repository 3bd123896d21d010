"""The job has one shape, `fields(Job)`: the store's columns, its rows, a job read back
from its row, a new job made from a request and the views' snapshots are all derived from
it, and must agree with it and with each other."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from emit.domain import job as shape
from emit.domain.job import Job, create_job
from emit.domain.model import JobStatus, NewJob, RetryBackoff
from emit.domain.views import Delivery, JobView
from emit.store.records import JOB_COLUMNS, STATE_COLUMNS, job_from_row, job_row, state_row
from emit.store.schema import migrate


def _every_field_set() -> Job:
    """A job whose every stored field holds a value of its own (no defaults), so a field
    dropped or swapped anywhere shows."""
    return Job(
        id="01JDQ0000000000000000000AB", space_id="space", seq=4, name="send",
        payload='{"to":"a@b.c"}', status=JobStatus.RUNNING, priority=7, max_retries=5,
        attempt_number=2, timeout_seconds=60, scheduled_for=1.5, callback_url="https://h/x",
        callback_headers={"x-token": "t"}, idempotency_key="once",
        retry_backoff=RetryBackoff(2, 3, 50), progress={"percent": 40},
        result='{"ok":1}', checkpoint='{"at":3}', lease_id="01JDQ0000000000000000000CD",
        deadline=9.5, event_seq=6, log_seq=3, created_at=1.25, updated_at=2.25,
        delivered_at=3.25, started_at=4.25, completed_at=5.25,
    )  # fmt: skip


def test_the_slots_are_the_fields() -> None:
    names = [f.name for f in dataclasses.fields(Job)]
    assert sorted(Job.__slots__) == sorted(names)
    assert tuple(n for n in names if n not in shape.MEMORY) == JOB_COLUMNS
    assert set(STATE_COLUMNS) < set(JOB_COLUMNS)


def test_the_schema_has_a_column_for_each_stored_field() -> None:
    db = sqlite3.connect(":memory:")
    migrate(db)
    columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    assert sorted(columns) == sorted([*JOB_COLUMNS, "events"])


def test_a_row_reads_back_as_the_job_it_was_made_from() -> None:
    job = _every_field_set()
    row = job_row(job, ',[1,"created",0,null,1.25]')
    assert len(row) == len(JOB_COLUMNS) + 1 and row[-1].startswith(",[1")
    back = job_from_row(row[:-1], {})
    for name in JOB_COLUMNS:
        assert getattr(back, name) == getattr(job, name), name
    for name, value in shape.MEMORY.items():
        assert getattr(back, name) == value, name


def test_a_state_row_is_the_state_columns_then_the_events_and_the_id() -> None:
    job = _every_field_set()
    full = dict(zip(JOB_COLUMNS, job_row(job), strict=False))
    row = state_row(job, "e")
    assert row == (*(full[c] for c in STATE_COLUMNS), "e", job.id)


def test_a_load_shares_one_string_per_space_and_name() -> None:
    names: dict[str, str] = {}
    first = job_from_row(job_row(_every_field_set())[:-1], names)
    second = job_from_row(job_row(_every_field_set())[:-1], names)
    assert first.space_id is second.space_id and first.name is second.name


def test_the_views_snapshot_the_job_by_their_own_field_names() -> None:
    job = _every_field_set()
    view, delivery = JobView.of(job), Delivery.of(job)
    renamed = {"payload_json": "payload", "result_json": "result", "checkpoint_json": "checkpoint"}
    for made in (view, delivery):
        for f in dataclasses.fields(made):
            if f.name == "events":
                continue
            value = getattr(made, f.name)
            expected = getattr(job, renamed.get(f.name, f.name))
            if f.name == "callback_headers":
                expected = {"x-token": "[redacted]"}
            assert value == expected, f.name


def test_a_request_names_only_fields_of_the_job() -> None:
    assert {f.name for f in dataclasses.fields(NewJob)} <= set(JOB_COLUMNS)


@pytest.mark.parametrize("scheduled_for", [None, 1_790_000_060.0])
def test_a_created_job_is_the_one_the_constructor_makes(scheduled_for: float | None) -> None:
    new = NewJob(
        name="send", payload='{"to":"a@b.c"}', priority=7, max_retries=5, timeout_seconds=60,
        scheduled_for=scheduled_for, callback_url="https://example.com/hook",
        callback_headers={"x-token": "t"}, idempotency_key="once",
        retry_backoff=RetryBackoff(2, 3, 50),
    )  # fmt: skip
    made = create_job("01JDQ0000000000000000000AB", "space", 4, new, 1_790_000_000.5)
    expected = Job(
        id="01JDQ0000000000000000000AB", space_id="space", seq=4, name="send",
        payload='{"to":"a@b.c"}',
        status=JobStatus.SCHEDULED if scheduled_for else JobStatus.PENDING, priority=7,
        max_retries=5, timeout_seconds=60, created_at=1_790_000_000.5,
        updated_at=1_790_000_000.5, scheduled_for=scheduled_for,
        callback_url="https://example.com/hook", callback_headers={"x-token": "t"},
        idempotency_key="once", retry_backoff=RetryBackoff(2, 3, 50), deadline=scheduled_for,
    )  # fmt: skip
    for slot in Job.__slots__:
        assert getattr(made, slot) == getattr(expected, slot), slot


def test_a_request_with_only_a_name_takes_the_defaults() -> None:
    made = create_job("01JDQ0000000000000000000AB", "space", 1, NewJob("n", "null"), 7.0)
    assert (made.priority, made.max_retries, made.timeout_seconds) == (0, 3, 300)
    assert made.status is JobStatus.PENDING and made.deadline is None
