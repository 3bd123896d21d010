"""Polling: order, filters, counts, long polls that park and wake, claim, ack on delivery."""

import pytest
import trio
from trio.testing import MockClock

import emit


async def test_higher_priority_first_then_oldest_first(jobs: emit.SpaceJobs) -> None:
    low = await jobs.create("j", priority=-5)
    old = await jobs.create("j")
    high = await jobs.create("j", priority=10)
    new = await jobs.create("j")
    order = [delivery.id for delivery in await jobs.poll(count=10)]
    assert order == [high.id, old.id, new.id, low.id]


async def test_count_is_an_upper_bound(jobs: emit.SpaceJobs) -> None:
    await jobs.create_many([{"name": "j"} for _ in range(7)])
    assert len(await jobs.poll(count=5)) == 5
    assert len(await jobs.poll(count=5)) == 2
    assert await jobs.poll(count=5) == []


async def test_the_type_filter_is_strict(jobs: emit.SpaceJobs) -> None:
    await jobs.create_many([{"name": "email"}, {"name": "sms"}, {"name": "email-bulk"}])
    got = await jobs.poll(count=10, names=["email"])
    assert [delivery.name for delivery in got] == ["email"]
    got = await jobs.poll(count=10, names="sms")
    assert [delivery.name for delivery in got] == ["sms"]


async def test_a_delivery_carries_the_descriptor_and_a_fresh_lease(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j", payload={"n": 1}, timeout_seconds=30, max_retries=2)
    [delivery] = await jobs.poll()
    wire = delivery.to_wire()
    assert set(wire) == {
        "id", "name", "payload", "priority", "timeoutSeconds", "maxRetries",
        "attemptNumber", "createdAt", "leaseId", "checkpoint",
    }  # fmt: skip
    assert (wire["id"], wire["payload"], wire["timeoutSeconds"]) == (job.id, {"n": 1}, 30)
    assert (await jobs.get(job.id)).status == "delivered"


async def test_poll_with_ack_hands_out_running_jobs(jobs: emit.SpaceJobs) -> None:
    job = await jobs.create("j")
    [delivery] = await jobs.poll(ack=True)
    stored = await jobs.get(job.id)
    assert stored.status == "running"
    assert [event.type for event in stored.events or ()] == ["created", "delivered", "started"]
    await jobs.complete(delivery.id, 1, lease_id=delivery.lease_id)


async def test_a_long_poll_is_woken_by_a_new_job_at_once(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    got: list[list[emit.Delivery]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _poll_into(jobs, got, wait=30))
        await trio.sleep(5)
        assert got == []
        start = trio.current_time()
        job = await jobs.create("j")
    assert trio.current_time() == start
    assert [delivery.id for delivery in got[0]] == [job.id]


async def _poll_into(
    jobs: emit.SpaceJobs, into: list[list[emit.Delivery]], wait: float, **options: object
) -> None:
    into.append(await jobs.poll(wait=wait, **options))  # type: ignore[arg-type]


async def test_a_long_poll_ends_empty_when_its_wait_is_over(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    start = trio.current_time()
    assert await jobs.poll(wait=12.5) == []
    assert trio.current_time() - start == pytest.approx(12.5)


async def test_parked_pollers_are_served_first_come_first_served(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    got: list[tuple[str, list[emit.Delivery]]] = []

    async def poller(name: str) -> None:
        got.append((name, await jobs.poll(wait=60)))

    async with trio.open_nursery() as nursery:
        for name in ("first", "second", "third"):
            nursery.start_soon(poller, name)
            await trio.sleep(1)
        await jobs.create_many([{"name": "a"}, {"name": "b"}])
        await trio.sleep(1)
        assert sorted(name for name, _ in got) == ["first", "second"]
        await jobs.create("c")
    assert {name: [d.name for d in ds] for name, ds in got} == {
        "first": ["a"],
        "second": ["b"],
        "third": ["c"],
    }


async def test_a_parked_poller_with_a_filter_waits_for_its_own_names(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    got: list[list[emit.Delivery]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _poll_into(jobs, got, wait=30, names=["video"]))
        await trio.sleep(1)
        await jobs.create("email")
        await trio.sleep(1)
        assert got == []
        await jobs.create("video")
    assert [d.name for d in got[0]] == ["video"]
    assert [d.name for d in await jobs.poll()] == ["email"]


async def test_a_poller_that_gave_up_gets_no_jobs(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    with trio.move_on_after(5):
        await jobs.poll(wait=60)
    job = await jobs.create("j")
    assert (await jobs.get(job.id)).status == "pending"


async def test_claim_takes_a_specific_pending_job(jobs: emit.SpaceJobs) -> None:
    first = await jobs.create("j")
    second = await jobs.create("j")
    delivery = await jobs.claim(second.id)
    assert delivery.id == second.id
    with pytest.raises(emit.Conflict, match="delivered"):
        await jobs.claim(second.id)
    assert [d.id for d in await jobs.poll(count=5)] == [first.id]


async def test_claim_of_an_unknown_job_is_404(jobs: emit.SpaceJobs) -> None:
    with pytest.raises(emit.NotFound):
        await jobs.claim("01" + "0" * 24)


async def test_poll_validates_its_input(jobs: emit.SpaceJobs) -> None:
    with pytest.raises(emit.InvalidRequest, match="count"):
        await jobs.poll(count=51)
    with pytest.raises(emit.InvalidRequest, match="wait"):
        await jobs.poll(wait=61)


async def test_an_abandoned_long_poll_is_not_counted_as_parked(
    autojump_clock: MockClock, jobs: emit.SpaceJobs
) -> None:
    with trio.move_on_after(1):
        await jobs.poll(wait=30)
    assert await jobs.pollers() == 0
