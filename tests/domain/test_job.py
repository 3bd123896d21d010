"""`Job.created` assigns a new job's slots by hand (for speed): it must give exactly what
the keyword constructor gives for the same request."""

from __future__ import annotations

import pytest

from emit.domain.model import Job, JobStatus, NewJob, RetryBackoff


@pytest.mark.parametrize("scheduled_for", [None, 1_790_000_060.0])
def test_a_created_job_is_the_one_the_constructor_makes(scheduled_for: float | None) -> None:
    new = NewJob(
        name="send", payload='{"to":"a@b.c"}', priority=7, max_retries=5, timeout_seconds=60,
        scheduled_for=scheduled_for, callback_url="https://example.com/hook",
        callback_headers={"x-token": "t"}, idempotency_key="once",
        retry_backoff=RetryBackoff(2, 3, 50),
    )  # fmt: skip
    made = Job.created("01JDQ0000000000000000000AB", "space", 4, new, 1_790_000_000.5)
    expected = Job(
        id="01JDQ0000000000000000000AB", space_id="space", seq=4, name="send",
        payload='{"to":"a@b.c"}',
        status=JobStatus.SCHEDULED if scheduled_for else JobStatus.PENDING, priority=7,
        max_retries=5, timeout_seconds=60, created_at=1_790_000_000.5,
        scheduled_for=scheduled_for, callback_url="https://example.com/hook",
        callback_headers={"x-token": "t"}, idempotency_key="once",
        retry_backoff=RetryBackoff(2, 3, 50), deadline=scheduled_for,
    )  # fmt: skip
    for slot in Job.__slots__:
        assert getattr(made, slot) == getattr(expected, slot), slot
