"""Benchmark of the worker runner (`emit.Worker`) beside the plain worker loop of the
quick start, run by hand from the project root: ``.venv/bin/python -m bench.runner``.

One ``emit serve`` in a child process (a fresh data directory, default durability:
synchronous=FULL; no rate limit); this process is the only client. Each run creates
its jobs first (1,000 a request, off the clock), then times one worker draining them:
from the worker's start to the last job's complete answered. The workers:

  loop httpx   the quick start's worker as a Python user writes it: one ``httpx.Client``,
               poll ``count 1`` -> ack -> progress -> complete, one job at a time.
               **The baseline**: the runner is on httpx too.
  loop raw     the same loop on the benches' raw HTTP/1.1 client (bench/client.py): what
               the loop costs with almost no client CPU.
  runner N     ``emit.Worker`` at concurrency N with a plain (``def``, run in a thread)
               or ``async def`` handler: long polls with ack, the handler, batched
               completes.

Every handler and loop returns a small dict; "with progress" each also reports progress
once a job (the loop's progress call, ``ctx.progress`` in a handler), the fair match for
the quick start's loop; "without progress" is the bare protocol. A warm-up round (not
counted) sizes each variant's runs to about ``--seconds``; the rounds after it run every
variant once, in an order rotated each round, so drift on the machine hits all alike
(with progress first, then without, each with its own rounds). Printed: each variant's
median jobs/s and its range over the rounds, requests, server CPU (the server and its
writer process) and client CPU per job, and its ratio to the baseline loop: the median
over rounds of the ratio within a round, which drift between rounds does not move.
Target: the runner at concurrency 16 >= 3x the loop.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

import emit
from bench.client import Connection, EmitServer
from bench.compare import machine, tree_cpu
from bench.proc import stolen_seconds

TARGET = 3.0
NAME = "bench"
CREATE_BATCH = 1000
RUN_TIMEOUT = 300.0
BASELINE = "loop httpx"
HEADLINES = ("runner 16 sync", "runner 16 async")


@dataclass(frozen=True, slots=True)
class Variant:
    kind: str
    """``httpx`` or ``raw`` (the loop), ``sync`` or ``async`` (the runner's handler)."""
    concurrency: int
    progress: bool

    @property
    def label(self) -> str:
        if self.kind in ("httpx", "raw"):
            return f"loop {self.kind}"
        return f"runner {self.concurrency} {self.kind}"


def variants(concurrencies: Iterable[int], progress: Iterable[bool]) -> list[Variant]:
    """The loops and the runner at each concurrency, each handler kind, for each
    progress setting."""
    found = []
    for with_progress in progress:
        found += [Variant("httpx", 1, with_progress), Variant("raw", 1, with_progress)]
        for concurrency in concurrencies:
            for kind in ("sync", "async"):
                found.append(Variant(kind, concurrency, with_progress))
    return found


@dataclass(frozen=True, slots=True)
class Run:
    jobs: int
    seconds: float
    requests: int
    """HTTP requests the worker sent."""
    server_cpu: float
    """CPU seconds of the server and its writer process over the run."""
    client_cpu: float
    """CPU seconds of this process (every thread) over the run."""

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


@dataclass(frozen=True, slots=True)
class Target:
    """What a worker needs of the server."""

    url: str
    space: str
    producer: str
    worker: str

    @classmethod
    def of(cls, server: EmitServer) -> Target:
        return cls(server.url, server.space, server.producer.decode(), server.worker.decode())

    @property
    def jobs(self) -> str:
        return f"/api/v1/spaces/{self.space}/jobs"


# ---------------------------------------------------------------------- the jobs


async def create_jobs(target: Target, count: int) -> None:
    connection = Connection(target.url)
    try:
        for start in range(0, count, CREATE_BATCH):
            items = [{"name": NAME, "payload": {"i": i}} for i in range(start, count)]
            await connection.post_json(
                target.jobs, target.producer.encode(), items[:CREATE_BATCH], 201
            )
    finally:
        await connection.aclose()


async def counts(target: Target) -> dict[str, int]:
    connection = Connection(target.url)
    try:
        answer = await connection.call(
            b"GET", f"/api/v1/spaces/{target.space}/stats", target.worker.encode(), b"", 200
        )
    finally:
        await connection.aclose()
    found: dict[str, int] = json.loads(answer)["counts"]
    return found


def result(payload: Any) -> dict[str, Any]:
    """A job's small result."""
    return {"ok": True, "i": payload["i"]}


# ---------------------------------------------------------------------- the loops


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await super().handle_async_request(request)


def loop_httpx(target: Target, count: int, progress: bool) -> tuple[float, int]:
    """The quick start's worker on ``httpx.Client``, until ``count`` jobs are done: the
    seconds it took and the requests it sent."""
    transport = CountingTransport()
    started = time.perf_counter()
    with httpx.Client(
        base_url=target.url,
        headers={"x-api-key": target.worker},
        transport=transport,
        timeout=RUN_TIMEOUT,
    ) as http:
        done = 0
        while done < count:
            answer = http.post(f"{target.jobs}/poll", json={"count": 1})
            answer.raise_for_status()
            for job in answer.json()["jobs"]:
                path = f"/api/v1/jobs/{job['id']}"
                http.post(f"{path}/ack").raise_for_status()
                if progress:
                    http.post(
                        f"{path}/progress", json={"percent": 50, "message": "halfway"}
                    ).raise_for_status()
                http.post(
                    f"{path}/complete", json={"result": result(job["payload"])}
                ).raise_for_status()
                done += 1
        seconds = time.perf_counter() - started
    return seconds, transport.requests


async def loop_raw(target: Target, count: int, progress: bool) -> tuple[float, int]:
    """The same loop on the benches' raw HTTP/1.1 client."""
    key = target.worker.encode()
    poll = json.dumps({"count": 1}).encode()
    halfway = json.dumps({"percent": 50, "message": "halfway"}).encode()
    connection = Connection(target.url)
    started = time.perf_counter()
    done = requests = 0
    with trio.fail_after(RUN_TIMEOUT):
        while done < count:
            polled = await connection.post(f"{target.jobs}/poll", key, poll, 200)
            requests += 1
            for job in json.loads(polled)["jobs"]:
                path = f"/api/v1/jobs/{job['id']}"
                await connection.post(f"{path}/ack", key, b"", 200)
                if progress:
                    await connection.post(f"{path}/progress", key, halfway, 200)
                body = json.dumps({"result": result(job["payload"])}).encode()
                await connection.post(f"{path}/complete", key, body, 200)
                requests += 3 if progress else 2
                done += 1
    seconds = time.perf_counter() - started
    await connection.aclose()
    return seconds, requests


# --------------------------------------------------------------------- the runner


class Counting(emit.AsyncClient):
    """The runner's client, which sets ``done`` once ``total`` completes are recorded."""

    def __init__(self, target: Target, total: int) -> None:
        self.transport = AsyncCountingTransport()
        super().__init__(target.url, target.worker, target.space, transport=self.transport)
        self.total = total
        self.completed = 0
        self.done = trio.Event()

    async def complete_many(self, items: Any) -> list[Any]:
        answers = await super().complete_many(items)
        self.completed += sum(not isinstance(answer, emit.EmitError) for answer in answers)
        if self.completed >= self.total:
            self.done.set()
        return answers


def handlers(worker: emit.Worker, kind: str, progress: bool) -> None:
    if kind == "sync":

        @worker.job(NAME)
        def plain(job: emit.Delivery, ctx: Any) -> dict[str, Any]:
            if progress:
                ctx.progress(50, "halfway")
            return result(job.payload)

    else:

        @worker.job(NAME)
        async def coroutine(job: emit.Delivery, ctx: Any) -> dict[str, Any]:
            if progress:
                await ctx.progress(50, "halfway")
            return result(job.payload)


async def runner(target: Target, count: int, variant: Variant) -> tuple[float, int]:
    """`emit.Worker` at the variant's concurrency until ``count`` jobs are completed;
    then stopped (its stop is not timed: the last complete's answer is the end)."""
    worker = emit.Worker(target.url, target.worker, target.space)
    handlers(worker, variant.kind, variant.progress)
    with trio.fail_after(RUN_TIMEOUT):
        async with Counting(target, count) as client, trio.open_nursery() as nursery:
            started = time.perf_counter()
            nursery.start_soon(lambda: worker.serve(concurrency=variant.concurrency, jobs=client))
            await client.done.wait()
            seconds = time.perf_counter() - started
            worker.stop()
    return seconds, client.transport.requests


# ------------------------------------------------------------------------ a run


def run(target: Target, server_pid: int, variant: Variant, count: int) -> Run:
    """Create ``count`` jobs, drain them with the variant's worker, check that every one
    completed."""
    before = trio.run(counts, target)
    trio.run(create_jobs, target, count)
    server0, client0 = tree_cpu(server_pid), time.process_time()
    if variant.kind == "httpx":
        seconds, requests = loop_httpx(target, count, variant.progress)
    elif variant.kind == "raw":
        seconds, requests = trio.run(loop_raw, target, count, variant.progress)
    else:
        seconds, requests = trio.run(runner, target, count, variant)
    server_cpu, client_cpu = tree_cpu(server_pid) - server0, time.process_time() - client0
    after = trio.run(counts, target)
    completed = after.get("completed", 0) - before.get("completed", 0)
    left = {status: n for status, n in after.items() if status != "completed" and n}
    if completed != count or left:
        raise RuntimeError(f"{variant.label}: {completed} of {count} completed; left {left}")
    return Run(count, seconds, requests, server_cpu, client_cpu)


# --------------------------------------------------------------------- reporting


def spread(runs: list[Run]) -> tuple[float, float, float]:
    rates = [r.rate for r in runs]
    return statistics.median(rates), min(rates), max(rates)


def per_job(runs: list[Run]) -> tuple[float, float, float]:
    """Requests, server CPU ms and client CPU ms per job, over all rounds."""
    jobs = sum(r.jobs for r in runs)
    return (
        sum(r.requests for r in runs) / jobs,
        sum(r.server_cpu for r in runs) * 1000 / jobs,
        sum(r.client_cpu for r in runs) * 1000 / jobs,
    )


def paired_ratio(runs: list[Run], baseline: list[Run]) -> float:
    """The median over rounds of the ratio of rates within a round."""
    return statistics.median(r.rate / b.rate for r, b in zip(runs, baseline, strict=True))


def report(results: dict[Variant, list[Run]], rounds: int) -> list[str]:
    lines = []
    for with_progress in (True, False):
        chosen = {v: runs for v, runs in results.items() if v.progress is with_progress}
        if not chosen:
            continue
        base = next((runs for v, runs in chosen.items() if v.label == BASELINE), None)
        kind = "with progress (one call a job)" if with_progress else "without progress"
        lines.append(f"{kind}, median of {rounds} rounds")
        lines.append(
            f"    {'':<16}{'jobs/s':>7}  {'range':>13}  {'x loop':>6}  {'req/job':>7}  "
            f"{'server ms/job':>13}  {'client ms/job':>13}"
        )
        for variant, runs in chosen.items():
            median, low, high = spread(runs)
            requests, server_ms, client_ms = per_job(runs)
            ratio = f"{paired_ratio(runs, base):5.2f}x" if base else "-"
            span = f"{low:,.0f} - {high:,.0f}"
            lines.append(
                f"    {variant.label:<16}{median:>7,.0f}  {span:>13}  {ratio:>6}  "
                f"{requests:>7.2f}  {server_ms:>13.2f}  {client_ms:>13.2f}"
            )
        for label in HEADLINES:
            headline = next((runs for v, runs in chosen.items() if v.label == label), None)
            if base and headline:
                paired = paired_ratio(headline, base)
                lines.append(
                    f"    {label} / {BASELINE}: {paired:.2f}x paired by round "
                    f"({spread(headline)[0] / spread(base)[0]:.2f}x by medians)   "
                    f"target >= {TARGET:g}x {'✓' if paired >= TARGET else '✗'}"
                )
    lines.append("(x loop: the median over rounds of the rate / that round's loop httpx rate)")
    return lines


# --------------------------------------------------------------------------- main


def measure(
    target: Target, server_pid: int, chosen: list[Variant], args: argparse.Namespace
) -> dict[Variant, list[Run]]:
    """A warm-up round that sizes each variant's runs to about ``args.seconds``, then
    ``args.rounds`` rounds of one run of each, in an order rotated each round."""
    sizes = {}
    for variant in chosen:
        warm = run(target, server_pid, variant, args.warmup_jobs)
        sizes[variant] = max(args.min_jobs, min(args.max_jobs, int(warm.rate * args.seconds)))
    results: dict[Variant, list[Run]] = {variant: [] for variant in chosen}
    for index in range(args.rounds):
        shift = index % len(chosen)
        for variant in chosen[shift:] + chosen[:shift]:
            results[variant].append(run(target, server_pid, variant, sizes[variant]))
    return results


def main(args: argparse.Namespace) -> list[str]:
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    progress = {"both": [True, False], "with": [True], "without": [False]}[args.progress]
    chosen = variants(concurrencies, progress)
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"bench.runner {began}: {args.rounds} rounds of about {args.seconds:g} s a run; "
        f"httpx {httpx.__version__}, trio {trio.__version__}",
        f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start",
    ]
    print("\n".join(lines), flush=True)
    data = Path(tempfile.mkdtemp(prefix="emit-bench-runner-"))
    server = None
    try:
        server = EmitServer(data / "data")
        target = Target.of(server)
        stolen, started = stolen_seconds(), time.perf_counter()
        results: dict[Variant, list[Run]] = {}
        for with_progress in progress:
            group = [variant for variant in chosen if variant.progress is with_progress]
            results |= measure(target, server.pid, group, args)
        elapsed = time.perf_counter() - started
        share = (stolen_seconds() - stolen) / elapsed / (os.cpu_count() or 1)
        more = report(results, args.rounds)
        more.append(
            f"total {elapsed:.0f} s; load average {os.getloadavg()[0]:.2f} at the end; the "
            f"host took {share:.0%} of the CPU meanwhile"
        )
        print("\n".join(more), flush=True)
        return lines + more
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(data, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="about how long a run is")
    parser.add_argument("--warmup-jobs", type=int, default=100, help="jobs a warm-up run")
    parser.add_argument("--min-jobs", type=int, default=50, help="the fewest jobs a run")
    parser.add_argument("--max-jobs", type=int, default=20_000, help="the most jobs a run")
    parser.add_argument(
        "--concurrency", default="1,16", help="the runner's concurrencies, comma-separated"
    )
    parser.add_argument(
        "--progress",
        choices=("both", "with", "without"),
        default="both",
        help="handlers and loops with a progress call a job, without, or both",
    )
    return parser


if __name__ == "__main__":
    main(parser().parse_args())
