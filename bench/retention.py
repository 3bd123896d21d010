"""Benchmark of retention under a steady load, run by hand from the project root:
``.venv/bin/python -m bench.retention`` (``--help`` for the knobs).

Two runs of a real ``emit serve`` (a process of its own, a fresh data directory,
synchronous=FULL), each under the same steady load for ``--seconds``: producers create
``--rate`` jobs a second in all (paced, each job with a ~``--pad``-byte payload and one
log line), ``--workers`` connections parked in poll (count 1, wait 30, ack true) log a
line on each job they get and complete it. The first run sets the space's retention to
``--retain`` seconds (PATCH the space: completed jobs are swept); the second keeps every
job (retention 0). Every ``--every`` seconds it prints, for both runs, the database's
size on disk (``emit.db`` + ``emit.db-wal``) and the jobs the store holds; at the end
the create -> delivered latency of each run (from sending the create to a worker
holding the poll answer) by minute and overall.

What it shows: with sweeping, the file grows for the retention (plus up to one sweep
interval) and then stays flat, freed pages taken again by new jobs; without, it grows
by the same bytes a job for as long as the load runs. And that the sweep does not move
the create -> delivered p99.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bench.client import Connection, EmitServer, percentile

POLL_PARKED = b'{"count":1,"wait":30,"ack":true}'
RESULT = b'{"result":{"ok":true}}'
LOG = b'[{"level":"info","message":"working on it"}]'


@dataclass
class Run:
    label: str
    sizes: list[tuple[float, int, int]] = field(default_factory=list)
    """(seconds since the load began, bytes on disk, jobs in the store)."""
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the load began, create -> delivered in ms)."""
    created: int = 0
    late: int = 0
    """Creates sent more than a second after their turn (the load fell behind)."""


def disk_bytes(data: Path) -> int:
    return sum(
        path.stat().st_size for path in (data / "emit.db", data / "emit.db-wal") if path.exists()
    )


def stored_jobs(data: Path) -> int:
    with sqlite3.connect(f"file:{data / 'emit.db'}?mode=ro", uri=True, timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])


async def load(emit: EmitServer, data: Path, run: Run, args: argparse.Namespace) -> None:
    sent_at: dict[int, float] = {}
    start = time.perf_counter()
    pad = "x" * args.pad

    async def worker(task_status: trio.TaskStatus[None]) -> None:
        connection = Connection(emit.url)
        await connection.connect()
        task_status.started()
        while True:
            polled = await connection.post(f"{emit.jobs}/poll", emit.worker, POLL_PARKED, 200)
            now = time.perf_counter()
            for job in json.loads(polled)["jobs"]:
                seq = job["payload"]["seq"]
                sent = sent_at.pop(seq, None)
                if sent is not None:
                    run.latencies.append((sent - start, (now - sent) * 1000))
                base = f"/api/v1/jobs/{job['id']}"
                await connection.post(f"{base}/logs", emit.worker, LOG, 202)
                await connection.post(f"{base}/complete", emit.worker, RESULT, 200)

    async def producer(first: int, step: int) -> None:
        connection = Connection(emit.url)
        await connection.connect()
        seq = first
        while True:
            due = start + seq / args.rate
            if due > start + args.seconds:
                return
            now = time.perf_counter()
            if due > now:
                await trio.sleep(due - now)
            elif now - due > 1:
                run.late += 1
            body = json.dumps({"name": "bench", "payload": {"seq": seq, "pad": pad}})
            sent_at[seq] = time.perf_counter()
            await connection.post(emit.jobs, emit.producer, body.encode(), 201)
            run.created += 1
            seq += step

    async def sizes() -> None:
        while True:
            elapsed = time.perf_counter() - start
            jobs = await trio.to_thread.run_sync(stored_jobs, data)
            run.sizes.append((elapsed, disk_bytes(data), jobs))
            await trio.sleep(args.every)

    async with trio.open_nursery() as nursery:
        for _ in range(args.workers):
            await nursery.start(worker)
        nursery.start_soon(sizes)
        async with trio.open_nursery() as producers:
            for first in range(args.producers):
                producers.start_soon(producer, first, args.producers)
        await trio.sleep(2)  # the last jobs are delivered
        run.sizes.append((time.perf_counter() - start, disk_bytes(data), stored_jobs(data)))
        nursery.cancel_scope.cancel()


def one_run(label: str, retain: int, args: argparse.Namespace) -> Run:
    data = Path(tempfile.mkdtemp(prefix="emit-bench-retention-"))
    emit = EmitServer(data, None, session=True)
    run = Run(label)
    try:
        admin = emit.value("admin key").encode()

        async def patch() -> None:
            connection = Connection(emit.url)
            body = json.dumps({"retention": {"completed": retain}}).encode()
            await connection.call(b"PATCH", f"/api/v1/spaces/{emit.space}", admin, body, 200)
            await connection.aclose()

        trio.run(patch)
        trio.run(load, emit, data, run, args)
    finally:
        emit.stop()
        shutil.rmtree(data, ignore_errors=True)
    return run


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print()
    header = "  ".join(f"{run.label + ': MB on disk, jobs':>30}" for run in runs)
    print(f"{'t (s)':>6}  {header}")
    for rows in zip(*(run.sizes for run in runs), strict=False):
        cells = "  ".join(f"{size / 1e6:>18.1f} {jobs:>11,}" for _, size, jobs in rows)
        print(f"{rows[0][0]:>6.0f}  {cells}")
    print()
    print("create -> delivered, ms (p50 / p99 / max), by minute of the load:")
    minutes = int(args.seconds // 60) + 1
    for minute in range(minutes):
        spans: list[str] = []
        for run in runs:
            window = [ms for at, ms in run.latencies if minute * 60 <= at < (minute + 1) * 60]
            if not window:
                spans.append(f"{run.label}: -")
                continue
            p50, p99 = percentile(window, 0.5), percentile(window, 0.99)
            spans.append(f"{run.label}: {p50:5.2f} / {p99:6.2f} / {max(window):6.1f}")
        print(f"  minute {minute + 1}:  " + "   ".join(spans))
    for run in runs:
        samples = [ms for _, ms in run.latencies]
        print(
            f"  {run.label} overall: p50 {percentile(samples, 0.5):.2f} ms, "
            f"p99 {percentile(samples, 0.99):.2f} ms, {len(samples):,} jobs "
            f"({run.created / args.seconds:.0f}/s; {run.late} creates late by > 1 s)"
        )


def main(args: argparse.Namespace) -> None:
    print(
        f"{args.rate} jobs/s for {args.seconds:.0f} s, {args.producers} producers, "
        f"{args.workers} workers; payload ~{args.pad} B; a log line a job"
    )
    runs = [
        one_run(f"retain {args.retain} s", args.retain, args),
        one_run("keep all", 0, args),
    ]
    report(runs, args)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__)
    parser.add_argument("--seconds", type=float, default=240.0, help="load per run")
    parser.add_argument("--rate", type=float, default=40.0, help="jobs created a second")
    parser.add_argument("--retain", type=int, default=30, help="seconds, the swept run")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--pad", type=int, default=200, help="payload bytes a job")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between sizes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse())
