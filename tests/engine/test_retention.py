"""Retention: finished jobs go once past their space's retention, swept on the sweeper's
own timer; live jobs stay; a key lasts as long as its job."""

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio
from trio.testing import MockClock

import emit
from emit.domain.settings import Retention
from emit.errors import InvalidRequest, NotFound
from emit.store.base import Store

FOREVER = Retention(completed=None, dead=None, killed=None)


@pytest.fixture
async def rt(new_store: Callable[[], Store]) -> AsyncIterator[emit.Runtime]:
    retention = Retention(completed=60, dead=120, killed=None)
    async with emit.open_runtime(new_store(), retention=retention, sweep_every=10) as runtime:
        yield runtime


async def finished(jobs: emit.SpaceJobs) -> dict[str, str]:
    """A job in each final status, and a pending and a running one: status → job id."""
    made = {}
    for status in ("completed", "dead", "killed", "running", "pending"):
        job = await jobs.create(status, max_retries=0, timeout_seconds=86400)
        made[status] = job.id
        if status == "pending":
            continue
        if status == "killed":
            await jobs.kill(job.id)
            continue
        await jobs.claim(job.id)
        await jobs.ack(job.id)
        await jobs.log(job.id, "info", "a line")
        if status == "completed":
            await jobs.complete(job.id, {"ok": True})
        elif status == "dead":
            await jobs.fail(job.id, "boom")
    return made


async def gone(jobs: emit.SpaceJobs, job_id: str) -> bool:
    try:
        await jobs.get(job_id)
    except NotFound:
        return True
    return False


async def test_finished_jobs_go_after_their_status_retention_and_live_ones_stay(
    autojump_clock: MockClock, rt: emit.Runtime
) -> None:
    with trio.fail_after(7200):
        jobs = rt.space((await rt.create_space("s")).id)
        made = await finished(jobs)
        assert len(await jobs.logs(made["completed"])) == 1
        await trio.sleep(75)  # past 60 s and a sweep: the completed job goes
        assert await gone(jobs, made["completed"])
        with pytest.raises(NotFound):
            await jobs.logs(made["completed"])
        assert not await gone(jobs, made["dead"])
        await trio.sleep(60)  # past 120 s: the dead one too
        assert await gone(jobs, made["dead"])
        await trio.sleep(3600)  # killed: kept forever; live ones are never swept
        for status in ("killed", "running", "pending"):
            assert not await gone(jobs, made[status])
        counts = {str(status): n for status, n in (await jobs.counts()).items()}
        assert (counts["completed"], counts["dead"], counts["killed"]) == (0, 0, 1)
        assert (counts["running"], counts["pending"]) == (1, 1)
        _, total = await jobs.list()  # the counts agree with the store
        assert total == 3


async def test_a_space_setting_overrides_the_server_default(
    autojump_clock: MockClock, rt: emit.Runtime
) -> None:
    with trio.fail_after(7200):
        short = rt.space((await rt.create_space("short")).id)
        default = rt.space((await rt.create_space("default")).id)
        await rt.update_space(short.space_id, {"retention": {"completed": 5}})
        short_made = await finished(short)
        default_made = await finished(default)
        await trio.sleep(15)
        assert await gone(short, short_made["completed"])
        # The statuses the setting leaves out follow the server's default.
        assert not await gone(short, short_made["dead"])
        assert not await gone(default, default_made["completed"])


async def test_a_changed_retention_takes_effect_without_a_restart(
    autojump_clock: MockClock,
    new_store: Callable[[], Store],
) -> None:
    with trio.fail_after(7200):
        async with emit.open_runtime(new_store(), retention=FOREVER, sweep_every=10) as rt:
            jobs = rt.space((await rt.create_space("s")).id)
            made = await finished(jobs)
            await trio.sleep(3600)
            assert not await gone(jobs, made["completed"])
            space = await rt.update_space(jobs.space_id, {"retention": {"completed": 1}})
            assert space.settings["retention"] == {"completed": 1}
            await trio.sleep(11)
            assert await gone(jobs, made["completed"])
            assert not await gone(jobs, made["dead"])
            await rt.update_space(jobs.space_id, {"retention": {"dead": 1, "killed": 0}})
            await trio.sleep(11)
            assert await gone(jobs, made["dead"])
            assert not await gone(jobs, made["killed"])


async def test_an_idempotency_key_lasts_as_long_as_its_job(
    autojump_clock: MockClock, rt: emit.Runtime
) -> None:
    with trio.fail_after(7200):
        jobs = rt.space((await rt.create_space("s")).id)
        first = await jobs.create("j", idempotency_key="order-1")
        await jobs.claim(first.id)
        await jobs.complete(first.id)
        [(again, created)] = await jobs.submit([{"name": "j", "idempotencyKey": "order-1"}])
        assert (again.id, created) == (first.id, False)
        await trio.sleep(75)
        assert await gone(jobs, first.id)
        [(new, created)] = await jobs.submit([{"name": "j", "idempotencyKey": "order-1"}])
        assert created and new.id != first.id
        # And a space that reloads from the store agrees: the key is the new job's.
        [(same, created)] = await jobs.submit([{"name": "j", "idempotencyKey": "order-1"}])
        assert (same.id, created) == (new.id, False)


async def test_a_job_retried_before_the_sweep_stays(
    autojump_clock: MockClock, rt: emit.Runtime
) -> None:
    with trio.fail_after(7200):
        jobs = rt.space((await rt.create_space("s")).id)
        made = await finished(jobs)
        await trio.sleep(119)  # the dead job is one second from its retention
        await jobs.retry(made["dead"])
        await trio.sleep(30)
        assert (await jobs.get(made["dead"])).status == "pending"


async def test_a_job_whose_webhook_is_being_delivered_stays_until_it_is_done(
    autojump_clock: MockClock,
    new_store: Callable[[], Store],
) -> None:
    answers = [503, 503, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200)

    transport = httpx.MockTransport(handler)
    with trio.fail_after(7200):
        async with emit.open_runtime(
            new_store(),
            retention=Retention(completed=1),
            callback_transport=transport,
            allow_private_callbacks=True,
        ) as rt:
            jobs = rt.space((await rt.create_space("s")).id)
            job = await jobs.create("j", callback_url="http://127.0.0.1:9/hook")
            await jobs.claim(job.id)
            await jobs.complete(job.id)
            await trio.sleep(2)
            await rt.sweep()
            assert not await gone(jobs, job.id)  # its webhook is still being retried
            await trio.sleep(120)
            assert answers == []
            await rt.sweep()
            assert await gone(jobs, job.id)


@pytest.mark.parametrize(
    ("retention", "field"),
    [
        ("week", "retention"),
        ([60], "retention"),
        ({"done": 60}, "retention.done"),
        ({"completed": -1}, "retention.completed"),
        ({"completed": 1.5}, "retention.completed"),
        ({"completed": "60"}, "retention.completed"),
        ({"completed": True}, "retention.completed"),
        ({"dead": 10**12}, "retention.dead"),
    ],
)
async def test_a_bad_retention_is_refused_and_changes_nothing(
    rt: emit.Runtime, retention: object, field: str
) -> None:
    with trio.fail_after(10):
        space = await rt.create_space("s")
        await rt.update_space(space.id, {"retention": {"completed": 30}})
        with pytest.raises(InvalidRequest) as refused:
            await rt.update_space(space.id, {"retention": retention, "rateLimit": 5})
        assert refused.value.field == field
        assert (await rt.get_space(space.id)).settings == {"retention": {"completed": 30}}


async def test_a_sweep_on_sqlite_deletes_old_jobs_with_their_rows_and_keeps_live_ones(
    tmp_path: Path,
) -> None:
    """Real time, a real file: the jobs finished an hour ago, in a runtime that started
    then (``start_time``); a runtime started now sweeps them."""
    with trio.fail_after(30):
        async with emit.open_runtime(tmp_path, start_time=time.time() - 3600) as rt:
            jobs = rt.space((await rt.create_space("s")).id)
            made = await finished(jobs)
            big = {"blob": "x" * 1000}  # an event past a job row's share: a row of its own
            await jobs.event(made["running"], "note", big)
        db = sqlite3.connect(tmp_path / "emit.db")
        assert db.execute("SELECT count(*) FROM job_logs").fetchone()[0] == 3
        retention = Retention(completed=60, dead=60, killed=None)
        async with emit.open_runtime(tmp_path, retention=retention) as rt:
            jobs = rt.space(jobs.space_id)
            assert await rt.sweep() == (2, False)
            assert await gone(jobs, made["completed"]) and await gone(jobs, made["dead"])
            for status in ("killed", "running", "pending"):
                assert not await gone(jobs, made[status])
            assert len((await jobs.get(made["running"])).events or ()) > 0
            assert await rt.sweep() == (0, False)
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3
        # The logs of the two swept jobs went with them; the others' stay.
        assert db.execute("SELECT count(*) FROM job_logs").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM job_events").fetchone()[0] == 1
        db.close()


async def test_a_failed_read_skips_the_sweep_and_the_space_goes_on(
    autojump_clock: MockClock, rt: emit.Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> list[object]:
        raise OSError("disk I/O error")

    with trio.fail_after(600):
        jobs = rt.space((await rt.create_space("s")).id)
        made = await finished(jobs)
        ref = rt.spaces.whereis(jobs.space_id)
        await trio.sleep(75)  # the sweeper deleted the completed job meanwhile
        monkeypatch.setattr(rt.store, "expired_jobs", broken)
        await trio.sleep(60)
        assert await rt.sweep() == (0, False)
        assert rt.spaces.whereis(jobs.space_id) is ref and not ref.stopped  # type: ignore[union-attr]
        assert not await gone(jobs, made["dead"])  # its turn came while reads failed
        assert (await jobs.create("j")).status == "pending"
