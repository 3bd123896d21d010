"""The hub's rendering, without sockets: a job event is encoded once per view however
many streams send it, and a space's messages are encoded only when a stream sends them
(its timestamps: tests/domain/test_clock.py)."""

import json

import pytest

from emit.isotime import iso
from emit.realtime.hub import EventHub, Published


def event(kind: str, data: object, seq: int = 1, job: str = "J" * 26) -> Published:
    return Published(job, "resize", "running", kind, 0, data, 1_764_323_755.038, seq)


@pytest.mark.parametrize("full", [True, False])
async def test_a_job_event_is_encoded_once_per_view(full: bool) -> None:
    hub = EventHub()
    streams = [hub.subscribe_job("S", "J" * 26, full) for _ in range(3)]
    hub.publish("S", [event("completed", {"result": 42}), event("progress", {"percent": 5})])
    got = [[s.receive.receive_nowait().text(full) for _ in range(2)] for s in streams]
    assert all(texts[0] is got[0][0] and texts[1] is got[0][1] for texts in got)
    completed, progress = (json.loads(text) for text in got[0])
    assert completed == {
        "type": "completed", "jobId": "J" * 26, "status": "running", "attemptNumber": 0,
        "timestamp": "2025-11-28T09:55:55.038Z", **({"data": {"result": 42}} if full else {}),
    }  # fmt: skip
    assert progress["data"] == {"percent": 5}  # progress keeps its data in either view


async def test_a_space_nobody_streams_counts_and_buffers_without_encoding() -> None:
    hub = EventHub()
    hub.subscribe_job("S", "K" * 26, False)  # the space is watched, its stream is not
    hub.publish("S", [event("created", None, 1), event("log", {"seq": 1}, 0)])
    hub.publish("S", [event("progress", {"percent": 1}, 2)])
    feed = hub._feeds["S"]
    assert feed.seq == 2 and all(entry._text is None for entry in feed.buffer)
    _, seq, missed, replay = hub.subscribe_space("S", True, 0, hub.instance_id)
    assert (seq, missed) == (2, False)
    shown = [json.loads(entry.text()) for entry in replay]
    assert [(m["seq"], m["type"], m["jobName"]) for m in shown] == [
        (1, "created", "resize"), (2, "progress", "resize"),
    ]  # fmt: skip
    assert shown[0]["timestamp"] == iso(1_764_323_755.038)


def test_a_burst_of_small_messages_does_not_cut_off_a_stream() -> None:
    """Cut off only past both bounds: more messages waiting than the queue size and more
    bytes than the byte bound. A burst of small ones (a create of 1000 jobs) passes; a
    stream that lets big ones pile up is cut off (1013) once both are passed."""
    hub = EventHub(queue_size=4, queue_bytes=10_000)
    small = hub.subscribe_space("S", True, None, None)[0]
    hub.publish("S", [event("created", None, n) for n in range(1, 41)])  # 40 x ~200 B
    assert small.close_code is None
    while small.waiting_bytes:
        small.taken(small.receive.receive_nowait().text())  # the stream catches up
    big = hub.subscribe_job("S", "J" * 26, True)
    hub.publish("S", [event("progress", {"message": "x" * 3_000}, n) for n in range(3)])
    assert big.close_code is None  # 3 waiting: not past the queue size yet
    hub.publish("S", [event("progress", {"message": "x" * 3_000}, n) for n in range(3, 6)])
    # (mypy keeps the narrowing to None from before the publish)
    assert (big.close_code, small.close_code) == (1013, 1013)  # type: ignore[comparison-overlap]
