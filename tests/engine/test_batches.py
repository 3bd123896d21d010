"""Batch complete and fail: each item is judged alone."""

import emit


async def test_each_item_of_a_batch_complete_stands_alone(jobs: emit.SpaceJobs) -> None:
    created = await jobs.create_many([{"name": "j"} for _ in range(3)])
    deliveries = await jobs.poll(count=2, ack=True)
    done_already = deliveries[1]
    await jobs.complete(done_already.id)
    outcomes = await jobs.complete_many(
        [
            {"id": deliveries[0].id, "result": {"ok": 1}, "leaseId": deliveries[0].lease_id},
            {"id": done_already.id, "result": None},
            {"id": "0" * 26, "result": None},
            {"id": created[2].id, "result": None},  # still pending
        ]
    )
    assert isinstance(outcomes[0], emit.JobView) and outcomes[0].result == {"ok": 1}
    assert [type(outcome).__name__ for outcome in outcomes[1:]] == [
        "Conflict",
        "NotFound",
        "Conflict",
    ]
    assert [getattr(o, "status", None) for o in outcomes[1:]] == [409, 404, 409]


async def test_each_item_of_a_batch_fail_stands_alone(jobs: emit.SpaceJobs) -> None:
    await jobs.create_many([{"name": "j", "maxRetries": 0} for _ in range(2)])
    a, b = await jobs.poll(count=2)
    outcomes = await jobs.fail_many(
        [{"id": a.id, "error": "x"}, {"id": b.id, "error": "y", "leaseId": "stale"}]
    )
    assert isinstance(outcomes[0], emit.JobView) and outcomes[0].status == "dead"
    assert isinstance(outcomes[1], emit.Conflict)
    assert (await jobs.get(b.id)).status == "delivered"


async def test_a_batch_naming_a_job_twice_refuses_the_second_with_its_true_state(
    jobs: emit.SpaceJobs,
) -> None:
    job = await jobs.create("j")
    await jobs.poll(ack=True)
    first, second = await jobs.complete_many([{"id": job.id}, {"id": job.id}])
    assert isinstance(first, emit.JobView) and first.status == "completed"
    assert isinstance(second, emit.Conflict)
    assert "that is completed" in second.message
