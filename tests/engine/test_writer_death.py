"""The store's writer process killed under a running engine (real SQLite, real time):
the write in flight is refused as "may or may not have been saved" (here it was not:
the process was dead before it was sent), the space reloads from the store, nothing
acknowledged is lost, and the next write starts a new writer process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

import emit
from emit.store.sqlite import SQLiteStore


async def test_a_killed_writer_process_refuses_one_write_and_the_engine_carries_on(
    tmp_path: Path,
) -> None:
    async with emit.open_runtime(tmp_path) as rt:
        store = rt.store
        assert isinstance(store, SQLiteStore)
        jobs = rt.space((await rt.create_space("s")).id)
        kept = await jobs.create("kept")
        process = store._process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(process.wait)
        with pytest.raises(emit.Unavailable, match="may or may not have been saved"):
            await jobs.create("lost")
        # The space reloaded from the store; a new writer process takes the next write.
        again = await jobs.create("again")
        page, total = await jobs.list()
        assert total == 2 and {job.id for job in page} == {kept.id, again.id}
        [first, second] = await jobs.poll(count=2, ack=True)
        assert {first.id, second.id} == {kept.id, again.id}
        await jobs.complete(first.id, lease_id=first.lease_id)
        assert (await jobs.counts())[emit.JobStatus.COMPLETED] == 1
    async with emit.open_runtime(tmp_path) as rt:
        [space] = await rt.list_spaces()
        counts = await rt.space(space.id).counts()
        assert counts[emit.JobStatus.COMPLETED] == 1 and counts[emit.JobStatus.RUNNING] == 1
