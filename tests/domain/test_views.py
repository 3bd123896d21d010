"""Views are snapshots of a job built positionally (for speed): each field must hold the
job attribute of its own name, never its neighbour's."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from emit.domain.job import Job
from emit.domain.model import Event, EventType, JobStatus
from emit.domain.views import REDACTED, Delivery, JobView

_RENAMED = {"payload_json": "payload", "result_json": "result", "checkpoint_json": "checkpoint"}


def _job_with_distinct_values() -> Job:
    job = Job.__new__(Job)
    for n, slot in enumerate(Job.__slots__):
        setattr(job, slot, f"<{slot} {n}>")
    return job


def test_a_job_view_field_holds_the_job_attribute_of_its_name() -> None:
    job = _job_with_distinct_values()
    view = JobView.of(job)
    for field in dataclasses.fields(JobView):
        if field.name == "events":
            assert view.events is None
        elif field.name == "callback_headers":
            continue  # redacted: below
        else:
            assert getattr(view, field.name) == getattr(job, _RENAMED.get(field.name, field.name))


def test_a_job_view_shows_the_callback_header_names_but_never_their_values() -> None:
    job = Job(**{**_NEW, "payload": "null"})
    job.callback_headers = {"Authorization": "Bearer whsec_x", "X-Tag": "7"}
    view = JobView.of(job)
    assert view.callback_headers == {"Authorization": REDACTED, "X-Tag": REDACTED}
    assert view.to_wire(encoded=True)["callbackHeaders"] == view.callback_headers
    assert job.callback_headers == {"Authorization": "Bearer whsec_x", "X-Tag": "7"}  # kept
    assert JobView.of(Job(**{**_NEW, "payload": "null"})).callback_headers is None


def test_a_job_view_keeps_the_events_it_is_given_as_a_tuple() -> None:
    events = [Event(1, EventType.CREATED, 1, None, 10.0)]
    assert JobView.of(_job_with_distinct_values(), events).events == tuple(events)


def test_a_delivery_field_holds_the_job_attribute_of_its_name() -> None:
    job = _job_with_distinct_values()
    delivery = Delivery.of(job)
    for field in dataclasses.fields(Delivery):
        assert getattr(delivery, field.name) == getattr(job, _RENAMED.get(field.name, field.name))


def _finished_job() -> Job:
    job = Job(
        id="01JDQ0000000000000000000AB", space_id="s", seq=1, name="n",
        payload='{"to":"é@b.c","n":[1,2.5,null]}', status=JobStatus.COMPLETED, priority=0,
        max_retries=3, timeout_seconds=300, created_at=1_790_000_000.25, updated_at=1_790_000_000.25,
        result='{"sent":true}', checkpoint='{"page":3}', lease_id="01JDQ0000000000000000000CD",
    )  # fmt: skip
    job.delivered_at = job.completed_at = 1_790_000_001.5
    return job


_NEW: dict[str, Any] = {
    "id": "01JDQ0000000000000000000EF", "space_id": "s", "seq": 2, "name": "n",
    "status": JobStatus.DELIVERED, "priority": 0, "max_retries": 3, "timeout_seconds": 300,
    "created_at": 1_790_000_000.0, "updated_at": 1_790_000_000.0, "lease_id": "01JDQ0000000000000000000GH",
}  # fmt: skip


def test_the_encoded_wire_form_is_the_same_json_as_the_decoded_one() -> None:
    for job in (_finished_job(), Job(**{**_NEW, "payload": "null"})):
        for view in (JobView.of(job), Delivery.of(job)):
            encoded = orjson.loads(orjson.dumps(view.to_wire(encoded=True)))
            assert encoded == view.to_wire()
