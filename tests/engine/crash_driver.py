"""Run in a subprocess by test_crash_recovery.py: works on a data directory (or a
PostgreSQL URL) under load
and prints every change emit acknowledged, so the test can kill -9 it at any moment and
check afterwards that nothing acknowledged was lost.

    python crash_driver.py DATA init          → prints the new space's id
    python crash_driver.py DATA run SPACE     → loops forever: create, poll+ack, complete
    python crash_driver.py DATA dump SPACE    → prints every job with its events as JSON
"""

import json
import sys

import trio

import emit


async def init(data: str) -> None:
    async with emit.open_runtime(data) as rt:
        space = await rt.create_space("crash")
        print(space.id, flush=True)


async def run(data: str, space_id: str) -> None:
    async with emit.open_runtime(data) as rt:
        jobs = rt.space(space_id)

        async def producer() -> None:
            n = 0
            while True:
                created = await jobs.create_many(
                    [{"name": "w", "payload": n + i, "timeoutSeconds": 60} for i in range(8)]
                )
                n += 8
                print("created", *[job.id for job in created], flush=True)

        async def worker() -> None:
            while True:
                got = await jobs.poll(count=5, wait=1, ack=True)
                if not got:
                    continue
                outcomes = await jobs.complete_many(
                    [{"id": d.id, "result": d.payload, "leaseId": d.lease_id} for d in got]
                )
                done = [o.id for o in outcomes if isinstance(o, emit.JobView)]
                print("completed", *done, flush=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            nursery.start_soon(worker)
            nursery.start_soon(worker)


async def dump(data: str, space_id: str) -> None:
    async with emit.open_runtime(data) as rt:
        jobs = rt.space(space_id)
        offset, out = 0, []
        while True:
            page, total = await jobs.list(limit=100, offset=offset)
            for view in page:
                full = await jobs.get(view.id)
                out.append(
                    {
                        "id": full.id,
                        "status": full.status.value,
                        "result": full.result,
                        "payload": full.payload,
                        "events": [[e.seq, e.type.value, e.data] for e in full.events or ()],
                    }
                )
            offset += len(page)
            if offset >= total:
                break
        counts = {status.value: n for status, n in (await jobs.counts()).items()}
        print(json.dumps({"jobs": out, "counts": counts}), flush=True)


if __name__ == "__main__":
    command = sys.argv[2]
    if command == "init":
        trio.run(init, sys.argv[1])
    elif command == "run":
        trio.run(run, sys.argv[1], sys.argv[3])
    else:
        trio.run(dump, sys.argv[1], sys.argv[3])
