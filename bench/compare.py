"""emit side by side with its peers, in one run: ``python -m bench.compare`` from the
project root (``--only`` for a subset, ``--jobs``/``--workers`` for the size).

One workload against every system: enqueue --jobs jobs with the payload {"i": n} from one
producer, then drain them with --workers workers, each taking a job and completing it
(a handler that does nothing); then --samples create->start latencies with one parked
worker and one producer creating one job at a time (from before the create is sent to
the moment the worker's code holds the started job; the next job is created once the
worker has finished the last one). The systems:

  emit, embedded       the Runtime in this process, SQLite synchronous=FULL (the
                       default): create_many(--batch), poll(50, ack) -> complete_many
  emit, HTTP           ``emit serve`` (synchronous=FULL) in a child process, the quick-start
                       worker's flow: one create per request; poll(count 1) -> ack ->
                       complete, one job at a time; the lean HTTP/1.1 client of bench/client.py
  emit, HTTP batched   the same server: create arrays of --batch; poll(count 50, ack true)
                       -> one batch complete (with the leases); the reference for ratios
  beanstalkd           Debian's, binlog on, default fsync (at most every 50 ms) and ``-f0``
                       (fsync every write); greenstalk: put one at a time (the protocol has
                       no batch); workers reserve -> delete in --workers processes
  BullMQ               npm bullmq on Debian's redis-server (appendonly yes, appendfsync
                       everysec and always; no RDB snapshots), driven by bench/peers/bullmq.mjs:
                       addBulk(--batch); one Worker with concurrency --workers
  RQ                   on the same Redis: enqueue_many(--batch) in a pipeline; --workers
                       processes each running RQ's SimpleWorker (burst mode), which runs a
                       job in the worker process itself instead of forking one per job

Each server is started here on a free loopback port with a fresh directory and stopped
after, also on error or Ctrl-C. Durability pairs: emit FULL (fsync per commit) is as
strict as beanstalkd ``-f0`` and Redis ``appendfsync always``; beanstalkd's default and
``everysec`` may lose the last 50 ms / 1 s on power loss.

CPU per job is counted in two parts, over enqueue and drain together: the server's
processes (emit serve and its store's writer process; beanstalkd; redis-server) and the
clients' (the producer in this process, and the workers: this process for emit over
HTTP, the worker processes for beanstalkd and RQ, the Node process for BullMQ). Embedded
emit is server and client in one process: all of it is counted as server. Memory is the
server's resident set (all its processes) after the enqueue, and its growth per job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import trio

import emit
from bench.client import ROOT, Connection, EmitServer, free_port, percentile
from bench.proc import cpu_seconds, stolen_seconds

PEERS = ROOT / "bench" / "peers"
RESULTS = ROOT / "bench" / "results"
WARMUP = 10
"""Latency samples taken first and dropped (connections, caches, the first fsync)."""
REFERENCE = "emit-http-batched"

SYSTEMS = {
    "emit-embedded": "emit, embedded (FULL)",
    "emit-http": "emit, HTTP unbatched (FULL)",
    "emit-http-batched": "emit, HTTP batched (FULL)",
    "beanstalkd-default": "beanstalkd, fsync <= 50 ms",
    "beanstalkd-f0": "beanstalkd -f0, fsync always",
    "bullmq-everysec": "BullMQ, Redis everysec",
    "bullmq-always": "BullMQ, Redis always",
    "rq-everysec": "RQ SimpleWorker, Redis everysec",
    "rq-always": "RQ SimpleWorker, Redis always",
}


@dataclass
class Result:
    key: str
    jobs: int
    enqueue_s: float
    drain_s: float
    server_cpu_s: float
    client_cpu_s: float | None
    """None: the client runs in the server's process and is counted there."""
    rss_before: int
    rss_after: int
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return SYSTEMS[self.key]

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_s

    @property
    def drain_rate(self) -> float:
        return self.jobs / self.drain_s

    @property
    def combined_rate(self) -> float:
        return self.jobs / (self.enqueue_s + self.drain_s)

    @property
    def server_us(self) -> float:
        return self.server_cpu_s / self.jobs * 1e6

    @property
    def client_us(self) -> float:
        return (self.client_cpu_s or 0.0) / self.jobs * 1e6

    @property
    def total_us(self) -> float:
        return self.server_us + self.client_us

    @property
    def growth_per_job(self) -> float:
        return (self.rss_after - self.rss_before) / self.jobs

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)


# ------------------------------------------------------------------ processes, /proc


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (emit's store writer is a child process)."""
    found, index = [pid], 0
    while index < len(found):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{found[index]}/task").iterdir():
                found += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return found


def tree_cpu(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def tree_rss(pid: int) -> int:
    """Resident set of ``pid`` and its descendants, bytes (shared pages counted in each)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{member}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class Meter:
    """Server CPU and this process's CPU (a client), read at phase boundaries."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.server = tree_cpu(server_pid)
        self.here = time.process_time()

    def lap(self) -> tuple[float, float]:
        server, here = tree_cpu(self.server_pid), time.process_time()
        used = (server - self.server, here - self.here)
        self.server, self.here = server, here
        return used


def wait_listening(proc: subprocess.Popen[bytes], port: int, name: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited at start with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within 15 s")


@contextlib.contextmanager
def served(name: str, command: Callable[[int, Path], list[str]]) -> Iterator[tuple[int, int]]:
    """A peer server on a free loopback port with a fresh directory: (pid, port);
    stopped and its directory removed on the way out, whatever happened."""
    directory = Path(tempfile.mkdtemp(prefix=f"emit-compare-{name}-"))
    port = free_port()
    proc = subprocess.Popen(
        command(port, directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(proc, port, name)
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def beanstalkd(binary: str, flags: list[str]) -> contextlib.AbstractContextManager[tuple[int, int]]:
    return served(
        "beanstalkd",
        lambda port, directory: [
            *[binary, "-l", "127.0.0.1", "-p", str(port), "-b", str(directory), *flags]
        ],
    )


def redis(binary: str, fsync: str) -> contextlib.AbstractContextManager[tuple[int, int]]:
    return served(
        "redis",
        lambda port, directory: [
            *[binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)],
            *["--appendonly", "yes", "--appendfsync", fsync, "--save", ""],
            *["--daemonize", "no", "--logfile", ""],
        ],
    )


def payload(i: int) -> dict[str, int]:
    return {"i": i}


# ------------------------------------------------------------------------ emit, trio


async def latency_samples(
    samples: int,
    create: Callable[[int], Awaitable[None]],
    work: Callable[[Callable[[float], None]], Awaitable[None]],
) -> list[float]:
    """``work(done)`` loops: take one job, note the time, finish the job, call
    ``done(noted)``. One job is created at a time, after the last one is done."""
    send, receive = trio.open_memory_channel[float](1)
    found: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, send.send_nowait)
        for i in range(WARMUP + samples):
            begun = time.perf_counter()
            await create(i)
            with trio.fail_after(30):
                started = await receive.receive()
            if i >= WARMUP:
                found.append((started - begun) * 1000)
        nursery.cancel_scope.cancel()
    return found


async def emit_embedded(args: argparse.Namespace, data: Path) -> Result:
    async with emit.open_runtime(data) as rt:
        jobs = rt.space((await rt.create_space("compare")).id)
        await jobs.counts()
        pid = os.getpid()
        rss_before, meter, begun = tree_rss(pid), Meter(pid), time.perf_counter()
        for start in range(0, args.jobs, args.batch):
            end = min(args.jobs, start + args.batch)
            await jobs.create_many(
                [{"name": "n", "payload": payload(i)} for i in range(start, end)]
            )
        enqueued = time.perf_counter()
        enqueue_cpu, _ = meter.lap()
        rss_after = tree_rss(pid)

        async def work() -> None:
            while deliveries := await jobs.poll(count=50, ack=True):
                items = [{"id": d.id, "result": None, "leaseId": d.lease_id} for d in deliveries]
                for outcome in await jobs.complete_many(items):
                    if isinstance(outcome, emit.EmitError):
                        raise outcome

        drain_begun = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(args.workers):
                nursery.start_soon(work)
        drained = time.perf_counter()
        drain_cpu, _ = meter.lap()
        counts = await jobs.counts()
        if counts[emit.JobStatus.COMPLETED] != args.jobs:
            raise RuntimeError(f"expected {args.jobs:,} completed jobs, have {counts}")

        async def create(i: int) -> None:
            await jobs.create("n", payload=payload(i))

        async def parked(done: Callable[[float], None]) -> None:
            while True:
                [delivery] = await jobs.poll(count=1, wait=30, ack=True)
                started = time.perf_counter()
                await jobs.complete(delivery.id, None, lease_id=delivery.lease_id)
                done(started)

        latencies = await latency_samples(args.samples, create, parked)
    return Result(
        "emit-embedded",
        args.jobs,
        enqueued - begun,
        drained - drain_begun,
        enqueue_cpu + drain_cpu,
        None,
        rss_before,
        rss_after,
        latencies,
    )


RESULT = b'{"result": null}'


async def emit_http(args: argparse.Namespace, data: Path, batched: bool) -> Result:
    server = EmitServer(data)
    try:
        return await _emit_http(args, server, batched)
    finally:
        server.stop()


async def _emit_http(args: argparse.Namespace, server: EmitServer, batched: bool) -> Result:
    producer, worker = server.producer, server.worker
    connection = Connection(server.url)
    await connection.post(f"{server.jobs}/poll", worker, b'{"count": 1}', 200)  # warm
    rss_before, meter, begun = tree_rss(server.pid), Meter(server.pid), time.perf_counter()
    if batched:
        for start in range(0, args.jobs, args.batch):
            end = min(args.jobs, start + args.batch)
            batch = [{"name": "n", "payload": payload(i)} for i in range(start, end)]
            await connection.post(server.jobs, producer, json.dumps(batch).encode(), 201)
    else:
        for i in range(args.jobs):
            body = json.dumps({"name": "n", "payload": payload(i)}).encode()
            await connection.post(server.jobs, producer, body, 201)
    enqueued = time.perf_counter()
    enqueue_server, enqueue_client = meter.lap()
    rss_after = tree_rss(server.pid)

    async def poll(http: Connection, body: bytes) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = json.loads(
            await http.post(f"{server.jobs}/poll", worker, body, 200)
        )["jobs"]
        return jobs

    async def ack(http: Connection, job: dict[str, Any]) -> None:
        await http.post(f"/api/v1/jobs/{job['id']}/ack", worker, b"", 200)

    async def complete(http: Connection, job: dict[str, Any]) -> None:
        await http.post(f"/api/v1/jobs/{job['id']}/complete", worker, RESULT, 200)

    async def complete_batch(http: Connection, jobs: list[dict[str, Any]]) -> None:
        items = [{"id": job["id"], "result": None, "leaseId": job["leaseId"]} for job in jobs]
        body = json.dumps({"jobs": items}).encode()
        answer = json.loads(await http.post(f"{server.jobs}/complete", worker, body, 200))
        refused = [item for item in answer["results"] if item["status"] != 200]
        if refused:
            raise RuntimeError(f"batch complete refused: {refused[:3]}")

    async def work(http: Connection) -> None:
        if batched:  # poll(count 50, ack true), then one batch complete with the leases
            while jobs := await poll(http, b'{"count": 50, "ack": true}'):
                await complete_batch(http, jobs)
        else:  # the quick-start worker: poll one, ack it, complete it
            while jobs := await poll(http, b'{"count": 1}'):
                await ack(http, jobs[0])
                await complete(http, jobs[0])

    workers = [Connection(server.url) for _ in range(args.workers)]
    for http in workers:
        await http.connect()
    meter.lap()
    drain_begun = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for http in workers:
            nursery.start_soon(work, http)
    drained = time.perf_counter()
    drain_server, drain_client = meter.lap()

    async def create(i: int) -> None:
        body = json.dumps({"name": "n", "payload": payload(i)}).encode()
        await connection.post(server.jobs, producer, body, 201)

    park_poll = (
        b'{"count": 50, "wait": 30, "ack": true}' if batched else b'{"count": 1, "wait": 30}'
    )

    async def parked(done: Callable[[float], None]) -> None:
        http = workers[0]
        while True:
            [job] = await poll(http, park_poll)
            if not batched:
                await ack(http, job)
            started = time.perf_counter()
            await (complete_batch(http, [job]) if batched else complete(http, job))
            done(started)

    latencies = await latency_samples(args.samples, create, parked)
    for http in [connection, *workers]:
        await http.aclose()
    return Result(
        "emit-http-batched" if batched else "emit-http",
        args.jobs,
        enqueued - begun,
        drained - drain_begun,
        enqueue_server + drain_server,
        enqueue_client + drain_client,
        rss_before,
        rss_after,
        latencies,
    )


# ----------------------------------------------------------------- Python peers, sync


def drain_in_processes(
    target: Callable[..., None], workers: int, args: tuple[Any, ...]
) -> tuple[float, float]:
    """``workers`` processes each run ``target(*args, barrier, results)``, which sends
    (its CPU seconds, its end time) when done; the clock starts at the barrier.
    Returns (seconds, the workers' CPU seconds)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=60)
        begun = time.monotonic()
        reports = [results.get(timeout=600) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    return max(end for _, end in reports) - begun, sum(cpu for cpu, _ in reports)


@contextlib.contextmanager
def parked(target: Callable[..., None], args: tuple[Any, ...]) -> Iterator[None]:
    """A parked worker in a process of its own, killed on the way out."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.kill()
        process.join()


def sync_latencies(samples: int, trip: Callable[[int], float]) -> list[float]:
    """``trip(i)`` creates job i and waits until the worker has finished it; it returns
    the time.monotonic() (one clock for all processes) at which the worker held it."""
    found = []
    for i in range(WARMUP + samples):
        begun = time.monotonic()
        started = trip(i)
        if i >= WARMUP:
            found.append((started - begun) * 1000)
    return found


def _beanstalk_client(port: int) -> Any:
    import greenstalk

    return greenstalk.Client(("127.0.0.1", port), use="bench", watch="bench")


def _beanstalk_drain(port: int, barrier: Any, results: Any) -> None:
    import greenstalk

    client = _beanstalk_client(port)
    barrier.wait(timeout=60)
    cpu = time.process_time()
    with contextlib.suppress(greenstalk.TimedOutError):
        while True:
            client.delete(client.reserve(timeout=0))
    results.put((time.process_time() - cpu, time.monotonic()))
    client.close()


def _beanstalk_parked(port: int, pipe: Pipe) -> None:
    client = _beanstalk_client(port)
    while True:
        job = client.reserve()
        started = time.monotonic()
        client.delete(job)
        pipe.send(started)


def run_beanstalkd(args: argparse.Namespace, key: str) -> Result:
    flags = ["-f", "0"] if key == "beanstalkd-f0" else []
    with beanstalkd(args.beanstalkd, flags) as (pid, port):
        producer = _beanstalk_client(port)
        rss_before, meter, begun = tree_rss(pid), Meter(pid), time.monotonic()
        for i in range(args.jobs):
            producer.put(json.dumps(payload(i)))
        enqueued = time.monotonic()
        enqueue_server, enqueue_client = meter.lap()
        rss_after = tree_rss(pid)
        drain_s, drain_client = drain_in_processes(_beanstalk_drain, args.workers, (port,))
        drain_server, _ = meter.lap()
        left = producer.stats_tube("bench")
        if left["current-jobs-ready"] or left["current-jobs-reserved"]:
            raise RuntimeError(f"jobs left in beanstalkd: {left}")

        here, there = multiprocessing.get_context("spawn").Pipe()

        def trip(i: int) -> float:
            producer.put(json.dumps(payload(i)))
            if not here.poll(30):
                raise RuntimeError("the parked beanstalkd worker took no job within 30 s")
            return float(here.recv())

        with parked(_beanstalk_parked, (port, there)):
            latencies = sync_latencies(args.samples, trip)
        producer.close()
    return Result(
        key,
        args.jobs,
        enqueued - begun,
        drain_s,
        enqueue_server + drain_server,
        enqueue_client + drain_client,
        rss_before,
        rss_after,
        latencies,
    )


def rq_job(data: dict[str, int]) -> None:
    """RQ's job: nothing (found by RQ through its dotted name)."""


def rq_stamp() -> float:
    """RQ's latency job: when the worker began running it."""
    return time.monotonic()


def _rq_drain(port: int, barrier: Any, results: Any) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker

    connection = Redis(port=port)
    worker = SimpleWorker([Queue("bench", connection=connection)], connection=connection)
    barrier.wait(timeout=60)
    cpu = time.process_time()
    worker.work(burst=True, logging_level="WARNING")
    results.put((time.process_time() - cpu, time.monotonic()))


def _rq_parked(port: int) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker

    connection = Redis(port=port)
    worker = SimpleWorker([Queue("latency", connection=connection)], connection=connection)
    worker.work(logging_level="WARNING")


def run_rq(args: argparse.Namespace, key: str) -> Result:
    from redis import Redis
    from rq import Queue

    with redis(args.redis, "always" if key == "rq-always" else "everysec") as (pid, port):
        connection = Redis(port=port)
        queue = Queue("bench", connection=connection)
        rss_before, meter, begun = tree_rss(pid), Meter(pid), time.monotonic()
        for start in range(0, args.jobs, args.batch):
            end = min(args.jobs, start + args.batch)
            with connection.pipeline() as pipe:
                queue.enqueue_many(
                    [
                        Queue.prepare_data("bench.compare.rq_job", (payload(i),))
                        for i in range(start, end)
                    ],
                    pipeline=pipe,
                )
                pipe.execute()
        enqueued = time.monotonic()
        enqueue_server, enqueue_client = meter.lap()
        rss_after = tree_rss(pid)
        drain_s, drain_client = drain_in_processes(_rq_drain, args.workers, (port,))
        drain_server, _ = meter.lap()
        finished = queue.finished_job_registry.count
        if finished != args.jobs or queue.count:
            raise RuntimeError(f"RQ finished {finished:,} of {args.jobs:,}, {queue.count} left")

        latency = Queue("latency", connection=connection)

        def trip(i: int) -> float:
            job = latency.enqueue("bench.compare.rq_stamp")
            result = job.latest_result(timeout=30)
            stamp = None if result is None else result.return_value
            if not isinstance(stamp, float):
                raise RuntimeError(f"the parked RQ worker's job gave {result!r} within 30 s")
            return stamp

        with parked(_rq_parked, (port,)):
            latencies = sync_latencies(args.samples, trip)
    return Result(
        key,
        args.jobs,
        enqueued - begun,
        drain_s,
        enqueue_server + drain_server,
        enqueue_client + drain_client,
        rss_before,
        rss_after,
        latencies,
    )


# -------------------------------------------------------------------- BullMQ, Node


def run_bullmq(args: argparse.Namespace, key: str) -> Result:
    """bench/peers/bullmq.mjs does the work; this process tells it when to start each
    phase and measures Redis between phases."""
    with redis(args.redis, "always" if key == "bullmq-always" else "everysec") as (pid, port):
        command = [args.node, "bullmq.mjs", str(port), str(args.jobs), str(args.workers)]
        command += [str(args.batch), str(args.samples), str(WARMUP)]
        node = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PEERS
        )
        assert node.stdin is not None and node.stdout is not None
        stdin, stdout = node.stdin, node.stdout

        def phase(name: str, answer: str) -> dict[str, Any]:
            if name:
                stdin.write(name + "\n")
                stdin.flush()
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"bullmq.mjs exited during {name or 'start'} ({node.wait()})")
            said: dict[str, Any] = json.loads(line)
            if said["event"] != answer:
                raise RuntimeError(f"bullmq.mjs said {said}, expected {answer}")
            return said

        try:
            phase("", "ready")
            rss_before, meter = tree_rss(pid), Meter(pid)
            enqueued = phase("enqueue", "enqueued")
            enqueue_server, _ = meter.lap()
            rss_after = tree_rss(pid)
            drained = phase("drain", "drained")
            drain_server, _ = meter.lap()
            latencies = phase("latency", "latencies")["ms"]
            node.wait(timeout=30)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
    return Result(
        key,
        args.jobs,
        enqueued["seconds"],
        drained["seconds"],
        enqueue_server + drain_server,
        enqueued["cpu"] + drained["cpu"],
        rss_before,
        rss_after,
        [float(ms) for ms in latencies],
    )


# ------------------------------------------------------------ set-up and versions


def selected(only: str | None) -> list[str]:
    """The systems ``--only`` names, in the order of SYSTEMS: a system's own name selects
    it alone; another word selects the systems it prefixes (``rq``: rq-everysec and
    rq-always; ``emit``: all three emit lines)."""
    if not only:
        return list(SYSTEMS)
    chosen: set[str] = set()
    for word in filter(None, (word.strip() for word in only.split(","))):
        found = [word] if word in SYSTEMS else [k for k in SYSTEMS if k.startswith(word + "-")]
        if not found:
            raise ValueError(f"unknown system {word}; known: {', '.join(SYSTEMS)}")
        chosen.update(found)
    return [key for key in SYSTEMS if key in chosen]


def missing(key: str, args: argparse.Namespace) -> str | None:
    """What a system needs and this machine lacks, as the command that installs it."""
    group = key.split("-")[0]
    if group == "beanstalkd":
        if not shutil.which(args.beanstalkd):
            return "no beanstalkd: apt-get install -y beanstalkd"
        if not _importable("greenstalk"):
            return "no greenstalk: pip install -e '.[bench]'"
    if group in ("bullmq", "rq") and not shutil.which(args.redis):
        return "no redis-server: apt-get install -y redis-server"
    if group == "bullmq" and not (shutil.which(args.node) and shutil.which(args.npm)):
        return "no node or npm: apt-get install -y nodejs npm (Node 18 or later)"
    if group == "rq" and not (_importable("rq") and _importable("redis")):
        return "no rq: pip install -e '.[bench]'"
    return None


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def ensure_bullmq(npm: str) -> None:
    if not (PEERS / "node_modules" / "bullmq").is_dir():
        print("  installing bullmq: npm install in bench/peers (once)", flush=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=PEERS, check=True)


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).strip()


def versions(args: argparse.Namespace) -> dict[str, str]:
    found = {
        "emit": f"{emit.__version__} @ {_output(['git', 'rev-parse', '--short', 'HEAD'])}",
        "python": platform.python_version(),
        "trio": trio.__version__,
    }
    if shutil.which(args.beanstalkd):
        found["beanstalkd"] = _output([args.beanstalkd, "-v"]).removeprefix("beanstalkd ")
    if shutil.which(args.redis):
        found["redis"] = _output([args.redis, "--version"]).split()[2].removeprefix("v=")
    bullmq = PEERS / "node_modules" / "bullmq" / "package.json"
    if bullmq.exists():
        found["bullmq"] = json.loads(bullmq.read_text())["version"]
    if shutil.which(args.node):
        found["node"] = _output([args.node, "--version"]).removeprefix("v")
    with contextlib.suppress(ImportError):
        from importlib.metadata import version

        found["rq"] = version("rq")
    return found


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


# ------------------------------------------------------------------------- report


def run_one(key: str, args: argparse.Namespace, base: Path) -> Result:
    if key == "emit-embedded":
        return trio.run(emit_embedded, args, base / key)
    if key.startswith("emit-http"):
        return trio.run(emit_http, args, base / key, key == "emit-http-batched")
    if key.startswith("beanstalkd"):
        return run_beanstalkd(args, key)
    if key.startswith("bullmq"):
        ensure_bullmq(args.npm)
        return run_bullmq(args, key)
    return run_rq(args, key)


COLUMNS = (
    f"{'system':33} {'enqueue/s':>9} {'drain/s':>8} {'both/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
    f" {'server':>7} {'client':>7} {'RSS MiB':>8} {'B/job':>6}"
)


def line(result: Result) -> str:
    client = "in-proc" if result.client_cpu_s is None else f"{result.client_us:,.0f}"
    return (
        f"{result.label:33} {result.enqueue_rate:9,.0f} {result.drain_rate:8,.0f} "
        f"{result.combined_rate:8,.0f} {result.p50:7.2f} {result.p99:7.2f} "
        f"{result.server_us:7,.0f} {client:>7} {result.rss_after / 2**20:8,.1f} "
        f"{result.growth_per_job:6,.0f}"
    )


def ratios(result: Result, reference: Result) -> str:
    """This system's figures divided by the reference's: above 1 is faster for the
    rates, slower (or more) for latency, CPU and memory."""
    pairs = [
        (result.enqueue_rate, reference.enqueue_rate),
        (result.drain_rate, reference.drain_rate),
        (result.combined_rate, reference.combined_rate),
        (result.p50, reference.p50),
        (result.p99, reference.p99),
        (result.total_us, reference.total_us),
        (result.rss_after, reference.rss_after),
    ]
    cells = [f"{mine / theirs:8.2f}x" if theirs else f"{'—':>9}" for mine, theirs in pairs]
    return f"{result.label:33}" + "".join(cells)


LEGEND = (
    "jobs/s: enqueue, drain, both (jobs / (enqueue + drain time)); create->start latency;\n"
    "CPU µs per job over enqueue + drain: the server's processes, and the clients' (producer\n"
    "and workers; in-proc: embedded, counted as server); the server's RSS after the enqueue\n"
    "(all its processes), and its growth per enqueued job"
)


def report_ratios(results: list[Result]) -> None:
    reference = next((r for r in results if r.key == REFERENCE), None)
    reference = reference or next((r for r in results if r.key.startswith("emit")), None)
    if reference is None:
        print("\n(no emit line in this run: no ratios)")
        return
    print(
        f"\n÷ {reference.label} (rates: above 1 is faster than it; latency, CPU "
        "(server + client) and RSS: above 1 is more)"
    )
    print(
        f"{'system':33}{'enqueue':>9}{'drain':>9}{'both':>9}{'p50':>9}{'p99':>9}{'CPU':>9}{'RSS':>9}"
    )
    for result in results:
        print(ratios(result, reference))


def chart(results: list[Result], title: str, path: Path) -> None:
    """Four panels sharing the systems' axis: rates, latency, CPU per job (log scales:
    the systems differ a hundredfold), and memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    rows = list(range(len(results)))
    figure, panels = plt.subplots(
        1, 4, figsize=(15, 0.42 * len(results) + 2.2), sharey=True, dpi=72
    )
    bars: list[tuple[str, list[tuple[str, list[float]]]]] = [
        (
            "jobs/s",
            [
                ("enqueue", [r.enqueue_rate for r in results]),
                ("drain", [r.drain_rate for r in results]),
                ("both", [r.combined_rate for r in results]),
            ],
        ),
        (
            "create→start, ms",
            [("p50", [r.p50 for r in results]), ("p99", [r.p99 for r in results])],
        ),
        (
            "CPU µs per job",
            [
                ("server", [r.server_us for r in results]),
                ("client (embedded: in server)", [r.client_us for r in results]),
            ],
        ),
    ]
    for panel, (title_, series) in zip(panels, bars, strict=False):
        height = 0.8 / len(series)
        for index, (name, values) in enumerate(series):
            offsets = [y + (index - (len(series) - 1) / 2) * height for y in rows]
            panel.barh(offsets, values, height, label=name)
        panel.set_xscale("log")
        panel.xaxis.set_minor_formatter(NullFormatter())
        panel.set_title(title_ + " (log scale)", fontsize=10)
        panel.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    memory = panels[3]
    memory.barh(rows, [r.rss_after / 2**20 for r in results], 0.6, color="gray")
    memory.set_title("server RSS after the enqueue, MiB", fontsize=10)
    panels[0].set_yticks(rows, [r.label for r in results])
    panels[0].invert_yaxis()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per system")
    parser.add_argument("--workers", type=int, default=4, help="workers draining")
    parser.add_argument("--batch", type=int, default=100, help="enqueue batch, where batched")
    parser.add_argument("--samples", type=int, default=300, help="latency samples per system")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(SYSTEMS)} (or a prefix)")
    parser.add_argument("--chart", type=Path, help="where the PNG goes (default bench/results/)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG (no matplotlib)")
    parser.add_argument("--beanstalkd", default="beanstalkd")
    parser.add_argument("--redis", default="redis-server")
    parser.add_argument("--node", default="node")
    parser.add_argument("--npm", default="npm")
    args = parser.parse_args()
    try:
        keys = selected(args.only)
    except ValueError as error:
        parser.error(str(error))
    emit.tune_gc()  # as `emit serve` does, for the embedded run
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    found = versions(args)
    print(
        f'bench.compare {began}: {args.jobs:,} jobs {{"i": n}}, {args.workers} workers, '
        f"{args.samples} latency samples, batches of {args.batch} where batched"
    )
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    print("versions: " + ", ".join(f"{name} {v}" for name, v in found.items()))
    base = Path(tempfile.mkdtemp(prefix="emit-compare-"))
    stolen, wall = stolen_seconds(), time.monotonic()
    results: list[Result] = []
    failed = []
    try:
        print(f"\n{LEGEND}\n{COLUMNS}")
        for key in keys:
            problem = missing(key, args)
            if problem:
                print(f"{SYSTEMS[key]:33} skipped: {problem}")
                failed.append(key)
                continue
            try:
                result = run_one(key, args, base)
            except Exception as error:
                print(f"{SYSTEMS[key]:33} failed: {error!r}")
                failed.append(key)
                continue
            results.append(result)
            print(line(result), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    share = (stolen_seconds() - stolen) / (time.monotonic() - wall) / (os.cpu_count() or 1)
    print(
        f"load average {os.getloadavg()[0]:.2f} at the end; the host took {share:.0%} of the "
        "CPU meanwhile (other work on the machine skews every number)"
    )
    report_ratios(results)
    if results and not args.no_chart:
        path = args.chart or RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.png"
        title = (
            f"{args.jobs:,} jobs, {args.workers} workers, {began}, {machine().split(' (')[0]}; "
            + ", ".join(f"{name} {v}" for name, v in found.items())
        )
        chart(results, title, path)
        print(f"\nchart: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
