"""Views are snapshots of a job built positionally (for speed): each field must hold the
job attribute of its own name, never its neighbour's."""

from __future__ import annotations

import dataclasses

from emit.domain.model import Event, EventType, Job
from emit.views import Delivery, JobView

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
        else:
            assert getattr(view, field.name) == getattr(job, _RENAMED.get(field.name, field.name))


def test_a_job_view_keeps_the_events_it_is_given_as_a_tuple() -> None:
    events = [Event(1, EventType.CREATED, 1, None, 10.0)]
    assert JobView.of(_job_with_distinct_values(), events).events == tuple(events)


def test_a_delivery_field_holds_the_job_attribute_of_its_name() -> None:
    job = _job_with_distinct_values()
    delivery = Delivery.of(job)
    for field in dataclasses.fields(Delivery):
        assert getattr(delivery, field.name) == getattr(job, _RENAMED.get(field.name, field.name))
