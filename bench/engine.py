"""Benchmark of the embedded engine (no HTTP), run by hand from the project root:
``.venv/bin/python -m bench.engine`` (as a module, so ``import emit`` finds the engine).

Measures, in one run on the same machine, through the embedding API (`emit.open_runtime`):
  1. durable lifecycle throughput (jobs/s): create -> poll -> ack -> complete, batched
     (create_many of --batch, poll count=50 wait=1 ack=True, complete_many), SQLite store
     with synchronous=FULL (the default) and with NORMAL, --workers worker tasks and one
     producer task;
     beside beanstalkd 1.x started here on a free loopback port with its binlog on
     (``-b DIR``), driven by greenstalk put -> reserve -> delete from --workers processes,
     once with beanstalkd's default fsync (at most every 50 ms) and once with ``-f0``
     (fsync every write, the only setting as strict as synchronous=FULL);
  2. memory per pending job: process RSS (VmRSS) before and after creating --pending
     jobs with payload {"i": n} in one space (SQLite store, synchronous=NORMAL for this
     fill phase only, to keep it fast);
  3. poll latency: p50/p99 of poll(count=1) + complete round trips with 1k pending vs
     --pending pending (samples interleaved; each taken job is replaced, so the backlog
     stays put); in the runtime recovered in 4, so with synchronous=FULL;
  4. recovery: time to enter ``open_runtime(dir)`` on the filled store (it loads every
     space first), in this process and in a fresh one (with that process's RSS).
The engine's goals, printed beside what was measured (they judge the engine, not the
run: the bench never fails on them): emit FULL >= 5x beanstalkd ``-f0`` (equal
durability); emit NORMAL >= 2x beanstalkd's default; emit's CPU per job below
beanstalkd's own, each beside the beanstalkd of its durability; <= 600 B per pending job
beyond its payload; poll latency flat (p50 at --pending within 1.5x of p50 at 1k);
recovery of 1M jobs <= 5 s.
The default run takes about 4 minutes on the 2-core machine (most of it filling and
recovering the 1M backlog); ``--pending 100000`` for a quick one.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import emit
from bench.client import ROOT, Beanstalkd, percentile
from bench.proc import cpu_seconds, memory, stolen_seconds
from emit import JobStatus
from emit.codec import dumps

FULL_GOAL = 5.0
"""emit FULL ÷ beanstalkd ``-f0``: the same durability (an fsync before each answer)."""
NORMAL_GOAL = 2.0
"""emit NORMAL ÷ beanstalkd's default (fsync at most every 50 ms)."""
MEMORY_GOAL = 600
"""Bytes per pending job beyond its payload."""
FLAT_GOAL = 1.5
RECOVERY_GOAL = 5.0
"""Seconds to recover 1M pending jobs."""
BEANSTALK_TUBE = "bench"


def rss() -> int:
    """This process's resident set size, bytes."""
    return memory()["VmRSS"]


def payload(i: int) -> dict[str, int]:
    return {"i": i}


# ------------------------------------------------------------------ 1. lifecycle, emit


@dataclass
class Rate:
    jobs_per_s: float
    cpu_us_per_job: float
    """emit: the whole process (event loop, SQLite threads, the bench's own loops) and
    its store's writer process; beanstalkd: the server process only."""
    writer_cpu_us_per_job: float = 0.0
    """emit: the part of ``cpu_us_per_job`` spent in the writer process."""


def children_cpu() -> float:
    """CPU seconds used so far by this process's live child processes (the store's
    writer process)."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                total += cpu_seconds(int(pid))
    return total


async def emit_lifecycle(
    data: Path, total: int, workers: int, batch: int, synchronous: str = "FULL"
) -> Rate:
    """jobs/s of create -> poll(ack) -> complete for ``total`` jobs."""
    async with emit.open_runtime(data, synchronous=synchronous) as rt:
        space = await rt.create_space("lifecycle")
        jobs = rt.space(space.id)
        completed = 0
        finished = cpu_finished = writer_cpu = 0.0

        async def produce() -> None:
            for start in range(0, total, batch):
                end = min(total, start + batch)
                await jobs.create_many(
                    [{"name": "n", "payload": payload(i)} for i in range(start, end)]
                )

        async def work(nursery: trio.Nursery) -> None:
            nonlocal completed, finished, cpu_finished, writer_cpu
            while completed < total:
                deliveries = await jobs.poll(count=50, wait=1.0, ack=True)
                if not deliveries:
                    continue
                results = await jobs.complete_many(
                    [{"id": d.id, "result": None, "leaseId": d.lease_id} for d in deliveries]
                )
                errors = [r for r in results if isinstance(r, emit.EmitError)]
                if errors:
                    raise errors[0]
                completed += len(deliveries)
            if not finished:
                finished, cpu_finished = time.perf_counter(), time.process_time()
                writer_cpu = children_cpu() - writer_start
                nursery.cancel_scope.cancel()  # the other workers sit in a long poll

        start, cpu_start = time.perf_counter(), time.process_time()
        writer_start = children_cpu()
        with trio.fail_after(max(120.0, total / 200)):  # bounded, even if jobs went missing
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for _ in range(workers):
                    nursery.start_soon(work, nursery)
        counts = await jobs.counts()
        if counts[JobStatus.COMPLETED] != total:
            raise RuntimeError(f"expected {total:,} completed jobs, have {counts}")
        return Rate(
            total / (finished - start),
            (cpu_finished - cpu_start + writer_cpu) / total * 1e6,
            writer_cpu / total * 1e6,
        )


# ------------------------------------------------------------- 1. lifecycle, beanstalkd


def _beanstalk_worker(port: int, n: int, barrier: Any, results: Any) -> None:
    """One worker process: ``n`` times put -> reserve -> delete."""
    import greenstalk

    client = greenstalk.Client(("127.0.0.1", port), use=BEANSTALK_TUBE, watch=BEANSTALK_TUBE)
    try:
        barrier.wait(timeout=60)
        start = time.monotonic()
        for i in range(n):
            client.put(dumps(payload(i)))
            job = client.reserve(timeout=10)
            client.delete(job)
        results.put((start, time.monotonic()))
    finally:
        client.close()


def beanstalkd_lifecycle(binary: str, flags: list[str], total: int, workers: int) -> Rate:
    """jobs/s of put -> reserve -> delete for ``total`` jobs against a beanstalkd of our
    own (loopback, binlog on in a fresh directory), stopped before returning."""
    server = Beanstalkd(flags, binary)
    try:
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(workers + 1)
        results = context.Queue()
        share = total // workers
        processes = [
            context.Process(target=_beanstalk_worker, args=(server.port, share, barrier, results))
            for _ in range(workers)
        ]
        for process in processes:
            process.start()
        try:
            barrier.wait(timeout=60)
            cpu_start = cpu_seconds(server.pid)
            spans = [results.get(timeout=max(120.0, total / 200)) for _ in processes]
            cpu = cpu_seconds(server.pid) - cpu_start
        finally:
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
                    process.join()
        elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
        return Rate(share * workers / elapsed, cpu / (share * workers) * 1e6)
    finally:
        server.stop()


# ----------------------------------------------------- 2-4. memory, latency, recovery


async def fill(jobs: emit.SpaceJobs, total: int, batch: int) -> None:
    for start in range(0, total, batch):
        end = min(total, start + batch)
        await jobs.create_many([{"name": "n", "payload": payload(i)} for i in range(start, end)])


@dataclass
class Filled:
    small_id: str
    big_id: str
    rss_before: int
    rss_after: int
    seconds: float


async def fill_store(data: Path, small: int, pending: int, batch: int) -> Filled:
    """Two spaces: ``small`` pending jobs, then ``pending`` pending jobs with the RSS
    measured around the second fill. synchronous=NORMAL, for speed (fill phase only)."""
    async with emit.open_runtime(data, synchronous="NORMAL") as rt:
        small_space = await rt.create_space("small")
        big_space = await rt.create_space("big")
        await fill(rt.space(small_space.id), small, batch)
        big = rt.space(big_space.id)
        await big.counts()  # the space actor is up and has answered once
        gc.collect()
        before = rss()
        start = time.perf_counter()
        await fill(big, pending, batch)
        seconds = time.perf_counter() - start
        gc.collect()
        after = rss()
        counts = await big.counts()
        if counts[JobStatus.PENDING] != pending:
            raise RuntimeError(f"expected {pending:,} pending jobs, have {counts}")
    return Filled(small_space.id, big_space.id, before, after, seconds)


async def round_trip(jobs: emit.SpaceJobs, i: int) -> tuple[float, float]:
    """One poll(count=1) + complete, timed (poll alone, whole trip), then one create
    (untimed) to put the backlog back where it was."""
    start = time.perf_counter()
    [delivery] = await jobs.poll(count=1)
    polled = time.perf_counter()
    await jobs.complete(delivery.id, None, lease_id=delivery.lease_id)
    done = time.perf_counter()
    await jobs.create("n", payload=payload(i))
    return (polled - start) * 1e6, (done - start) * 1e6


@dataclass
class Latencies:
    small_poll: list[float]
    small_trip: list[float]
    big_poll: list[float]
    big_trip: list[float]


async def latencies(rt: emit.Runtime, filled: Filled, samples: int, warmup: int) -> Latencies:
    small, big = rt.space(filled.small_id), rt.space(filled.big_id)
    result = Latencies([], [], [], [])
    for i in range(warmup + samples):
        # Interleaved, and which goes first alternates, so drift hits both alike.
        order = [
            (small, result.small_poll, result.small_trip),
            (big, result.big_poll, result.big_trip),
        ]
        for jobs, polls, trips in order if i % 2 else order[::-1]:
            poll_us, trip_us = await round_trip(jobs, i)
            if i >= warmup:
                polls.append(poll_us)
                trips.append(trip_us)
    return result


async def recover_here(
    data: Path, filled: Filled, small: int, pending: int, samples: int
) -> tuple[float, Latencies]:
    """Time entering open_runtime on the filled store (synchronous=FULL), check what it
    loaded, then take the latency samples in that runtime."""
    start = time.perf_counter()
    async with emit.open_runtime(data) as rt:
        seconds = time.perf_counter() - start
        for space_id, expected in ((filled.small_id, small), (filled.big_id, pending)):
            counts = await rt.space(space_id).counts()
            if counts[JobStatus.PENDING] != expected:
                raise RuntimeError(f"recovered {counts}, expected {expected:,} pending")
        measured = await latencies(rt, filled, samples, warmup=min(200, samples))
    return seconds, measured


def recover_in_child(data: Path) -> None:
    """``--recover DIR``: time a recovery of DIR in this fresh process; print JSON."""

    async def run() -> dict[str, float]:
        gc.collect()
        before = rss()
        start = time.perf_counter()
        async with emit.open_runtime(data) as rt:
            seconds = time.perf_counter() - start
            gc.collect()
            after = rss()
            loaded = 0
            for space in await rt.list_spaces():
                counts = await rt.space(space.id).counts()
                loaded += sum(n for status, n in counts.items() if not status.final)
        return {
            "seconds": seconds,
            "rss_before": before,
            "rss_after": after,
            "peak": memory()["VmHWM"],
            "jobs": loaded,
        }

    print(json.dumps(trio.run(run)))


async def recover_fresh(data: Path) -> dict[str, float]:
    done = await trio.run_process(
        [sys.executable, "-m", "bench.engine", "--recover", str(data)],
        capture_stdout=True,
        cwd=ROOT,
    )
    answer: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answer


# --------------------------------------------------------------------------- report


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="emit-bench-", dir=args.dir))
    print(
        f"emit {emit.__version__}, trio {trio.__version__}, SQLite {sqlite3.sqlite_version}, "
        f"CPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start; data in {base}"
    )
    print(f"collector thresholds {gc.get_threshold()}, switch interval {sys.getswitchinterval()} s")
    try:
        await lifecycle_part(args, base)
        await state_part(args, base)
    finally:
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other work skews all numbers)")
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _rates(rates: list[Rate]) -> str:
    return ", ".join(f"{rate.jobs_per_s:,.0f}" for rate in rates)


async def lifecycle_part(args: argparse.Namespace, base: Path) -> None:
    """Each emit mode beside the beanstalkd mode of the same durability: FULL (fsync
    per commit) beside ``-f0`` (fsync per write); NORMAL (a crash of emit loses nothing,
    power loss may lose the last commits) beside beanstalkd's default (fsync at most
    every 50 ms). Each mode's goals are judged against the beanstalkd beside it."""
    if args.jobs <= 0:
        return
    pairs = [
        ("FULL", "-f0, fsync every write", ["-f", "0"], FULL_GOAL),
        ("NORMAL", "default fsync, <= every 50 ms", [], NORMAL_GOAL),
    ]
    stolen, began = stolen_seconds(), time.perf_counter()
    emit_rates: dict[str, list[Rate]] = {mode: [] for mode, _, _, _ in pairs}
    beanstalk_rates: dict[str, list[Rate]] = {label: [] for _, label, _, _ in pairs}
    for round_no in range(args.rounds):  # interleaved, so drift on the machine hits all
        for mode, label, flags, _ in pairs:
            data = base / f"lifecycle-{round_no}-{mode}"
            emit_rates[mode].append(
                await emit_lifecycle(data, args.jobs, args.workers, args.batch, mode)
            )
            shutil.rmtree(data, ignore_errors=True)
            if args.emit_only:
                continue
            rate = await trio.to_thread.run_sync(
                beanstalkd_lifecycle, args.beanstalkd, flags, args.jobs, args.workers
            )
            beanstalk_rates[label].append(rate)
    print(
        f"\n1. durable lifecycle: {args.jobs:,} jobs, {args.workers} workers, best of "
        f"{args.rounds} (CPU: emit's process and its store's writer process; beanstalkd's "
        "server alone)"
    )
    print(f"  emit: create_many({args.batch}) -> poll(50, wait=1, ack) -> complete_many")
    share = (stolen_seconds() - stolen) / (time.perf_counter() - began) / (os.cpu_count() or 1)
    print(
        f"  CPU stolen by the host meanwhile: {share:.0%} (when it is more than a few %, runs vary)"
    )
    goals: list[str] = []
    for mode, label, _, goal in pairs:
        top = max(emit_rates[mode], key=lambda rate: rate.jobs_per_s)
        print(
            f"  {'emit, SQLite synchronous=' + mode:48}: {top.jobs_per_s:8,.0f} jobs/s  "
            f"{top.cpu_us_per_job:5,.0f} us CPU/job   (runs: {_rates(emit_rates[mode])}; "
            f"writer process {top.writer_cpu_us_per_job:,.0f} us/job)"
        )
        if args.emit_only:
            continue
        rates = beanstalk_rates[label]
        peer = max(rates, key=lambda rate: rate.jobs_per_s)
        print(
            f"  {'beanstalkd binlog, ' + label:48}: {peer.jobs_per_s:8,.0f} jobs/s  "
            f"{peer.cpu_us_per_job:5,.0f} us CPU/job   (runs: {_rates(rates)})   "
            f"emit {mode} / this {top.jobs_per_s / peer.jobs_per_s:.2f}x"
        )
        ratio = top.jobs_per_s / peer.jobs_per_s
        goals.append(
            f"  goal: emit {mode} >= {goal:g}x beanstalkd {label.split(',')[0]}: "
            f"{ratio:.2f}x, {met(ratio >= goal)}; CPU per job below beanstalkd's own: "
            f"{top.cpu_us_per_job:,.0f} against {peer.cpu_us_per_job:,.0f} us, "
            f"{met(top.cpu_us_per_job < peer.cpu_us_per_job)}"
        )
    for line in goals:
        print(line)


def met(reached: bool) -> str:
    """A goal's state beside its measure: it judges the engine, never the run."""
    return "met" if reached else "not yet"


async def state_part(args: argparse.Namespace, base: Path) -> None:
    if args.pending <= 0:
        return
    data = base / "state"
    filled = await fill_store(data, args.small, args.pending, args.batch)
    per_job = (filled.rss_after - filled.rss_before) / args.pending
    text = dumps(payload(args.pending // 2))
    in_memory = sys.getsizeof(text)
    beyond = per_job - in_memory

    print(
        f"\n2. memory per pending job: {args.pending:,} jobs in one space, SQLite store "
        f"(synchronous=NORMAL for this fill only)"
    )
    print(
        f"  {'fill rate':26}: {args.pending / filled.seconds:8,.0f} jobs/s "
        f"({filled.seconds:.1f} s, create_many of {args.batch})"
    )
    print(
        f"  {'RSS before / after':26}: {filled.rss_before / 2**20:8,.1f} MiB / "
        f"{filled.rss_after / 2**20:,.1f} MiB"
    )
    print(f"  {'RSS per pending job':26}: {per_job:8,.0f} B")
    print(
        f"  {'payload ' + text:26}: {len(text):8} B as JSON text, {in_memory} B as the str "
        f"the job keeps"
    )
    print(
        f"  {'beyond the payload':26}: {beyond:8,.0f} B   goal <= {MEMORY_GOAL} B, "
        f"{met(beyond <= MEMORY_GOAL)}"
    )

    seconds, measured = await recover_here(data, filled, args.small, args.pending, args.samples)
    fresh = await recover_fresh(data)

    print(
        f"\n3. poll(count=1) + complete round trip: {args.samples:,} samples per backlog, "
        f"interleaved, synchronous=FULL, microseconds"
    )
    rows = [
        (f"{args.small:,} pending", measured.small_poll, measured.small_trip),
        (f"{args.pending:,} pending", measured.big_poll, measured.big_trip),
    ]
    for label, polls, trips in rows:
        print(
            f"  {label:26}: p50 {percentile(trips, 0.5):6,.0f}  p99 "
            f"{percentile(trips, 0.99):6,.0f}  mean {statistics.mean(trips):6,.0f}   "
            f"(poll alone: p50 {percentile(polls, 0.5):6,.0f}  p99 {percentile(polls, 0.99):6,.0f})"
        )
    ratio = percentile(measured.big_trip, 0.5) / percentile(measured.small_trip, 0.5)
    ratio99 = percentile(measured.big_trip, 0.99) / percentile(measured.small_trip, 0.99)

    print(
        f"  {'big / small':26}: p50 {ratio:.2f}x, p99 {ratio99:.2f}x   "
        f"goal p50 <= {FLAT_GOAL:g}x (flat), {met(ratio <= FLAT_GOAL)}"
    )

    loaded = args.pending + args.small
    goal = RECOVERY_GOAL * loaded / 1_000_000
    print(
        f"\n4. recovery: entering open_runtime(dir) on {loaded:,} pending jobs in 2 spaces, "
        f"goal <= {goal:.1f} s ({RECOVERY_GOAL:g} s per 1M)"
    )
    for label, secs in (("in this process", seconds), ("in a fresh process", fresh["seconds"])):
        print(f"  {label:26}: {secs:8.2f} s  ({loaded / secs:8,.0f} jobs/s), {met(secs <= goal)}")
    grown = (fresh["rss_after"] - fresh["rss_before"]) / fresh["jobs"]
    print(
        f"  {'fresh process RSS':26}: {fresh['rss_before'] / 2**20:8,.0f} MiB before, "
        f"{fresh['rss_after'] / 2**20:,.0f} MiB after ({grown:,.0f} B per recovered job), "
        f"peak {fresh['peak'] / 2**20:,.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000, help="lifecycle jobs per run (0: skip)")
    parser.add_argument("--rounds", type=int, default=2, help="lifecycle runs of each, interleaved")
    parser.add_argument("--workers", type=int, default=4, help="worker tasks / processes")
    parser.add_argument("--batch", type=int, default=1000, help="create_many batch size")
    parser.add_argument("--pending", type=int, default=1_000_000, help="big backlog (0: skip 2-4)")
    parser.add_argument("--small", type=int, default=1000, help="small backlog, for latency")
    parser.add_argument("--samples", type=int, default=3000, help="latency samples per backlog")
    parser.add_argument("--dir", default=None, help="where the temporary data goes")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--beanstalkd", default=shutil.which("beanstalkd") or "/usr/bin/beanstalkd")
    parser.add_argument(
        "--emit-only", action="store_true", help="skip beanstalkd (quick iterations)"
    )
    parser.add_argument("--recover", type=Path, help=argparse.SUPPRESS)  # the fresh process
    args = parser.parse_args()
    emit.tune_gc()  # as `emit serve` does; see emit/tuning.py
    if args.recover is not None:
        recover_in_child(args.recover)
    else:
        trio.run(main, args)
