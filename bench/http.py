"""Benchmark of the HTTP API, run by hand from the project root:
``.venv/bin/python -m bench.http`` (as a module: run as a script, this file would shadow
the standard library's ``http`` package).

Every server runs in a process of its own (``python -m emit serve --rate-limit 1000000``,
which is the ``emit`` command, on a fresh data directory, synchronous=FULL; a bare
Quart-Trio app; beanstalkd), so client load never shares the server's event loop. The
clients are sync ``httpx.Client``s, one keep-alive connection each, one per thread of this
process: the GIL keeps the clients to one core and leaves the other of this 2-core machine
to the server. httpx costs about 1 ms of CPU a request here, close to what the bare route
costs the server, so the bare rate is partly bound by the client (client processes instead
of threads measured no better: they take the server's core). Hence the tables print each
side's CPU share, and for (a) the server's CPU time per request, which no client limit can
flatter. Measures, in one run:
  (a) the quick-start worker flow, unbatched: --workers threads, each looping
      create -> poll(count 1) -> ack -> complete, one job at a time, so the "4 requests a
      job" of the guide are all on the clock (the create counts in the job's requests; no
      job is made ahead). Beside it the request rate of a minimal Quart-Trio route (one
      POST route that reads the body and answers a small JSON) under Hypercorn's trio
      worker with emit's Hypercorn config, same threads, same body. Windows interleaved,
      best of --rounds. Target: emit jobs/s >= 0.9 x (bare requests/s / 4).
  (a') the same flow, bodies and bare route on the lean client of (c'): --lean-workers
      raw HTTP/1.1 connections in one trio process, which costs the machine far less CPU
      than httpx in threads, so the ratio is less the client's.
  (b) the batched lifecycle: one producer creating --batch jobs a request, --workers
      threads polling count 50 with wait 1 and ack true, then one batch complete per poll
      (POST S/jobs/complete with each job's leaseId); jobs/s from the first create to the
      last complete. Beside it beanstalkd, started here on a free loopback port with its
      binlog on (``-b DIR``; default fsync, at most every 50 ms, and ``-f0``, fsync on
      every write as strict as synchronous=FULL): greenstalk put -> reserve -> delete,
      one producer thread and --workers worker threads, the same payloads. Target: >= 1x.
  (c) create -> delivered latency with long poll: --workers threads parked in poll
      (count 1, wait 30, ack true); one producer creates one job at a time and waits until
      it is delivered; latency = from sending the create to the worker holding the poll
      answer (both stamped with this process's perf_counter). Targets: p50 <= 5 ms,
      p99 <= 25 ms.
``--front`` also runs (a') and (b') against ``python -m bench.front serve``, which is emit
with its five hot routes (create, poll, batch complete, ack, complete) answered by a
plain ASGI function in front of the Quart app, calling the same handlers: (a'') and
(b''), an experiment that measures what serving them below Quart would give (bench/front.py).
``--profile DIR`` instead runs (a) against the bare server and emit, and (b) against emit,
each server under cProfile for the measured window only (profiles kept in DIR), and prints
own time per request by package, bare beside emit, JSON's inclusive share, and emit's top
functions under (a). cProfile sees the event-loop thread only (SQLite runs in worker
threads), inflates Python code more than C, counts wall time (so idle epoll waits show),
and counts every resumption of a coroutine as a call.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import greenstalk
import httpx
import trio

from bench.proc import cpu_seconds

FLOW_TARGET = 0.9
BATCH_TARGET = 1.0
P50_TARGET_MS = 5.0
P99_TARGET_MS = 25.0
START_TIMEOUT = 30.0
JSON_HEADERS = {"content-type": "application/json"}


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def job_body(i: int) -> bytes:
    return json.dumps({"name": "bench", "payload": {"i": i}}).encode()


# ------------------------------------------------------------------------ servers


class Served:
    """A server in a child process: started, its first lines read, stopped with SIGTERM.
    A watchdog kills it if it does not start or stop in time."""

    url: str
    """Where it serves, read from its first lines by the subclass."""

    def __init__(self, command: list[str], last_line: Callable[[str], bool]) -> None:
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        watchdog = threading.Timer(START_TIMEOUT, self.proc.kill)
        watchdog.start()
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if last_line(line):
                break
        watchdog.cancel()
        if self.proc.poll() is not None:
            raise RuntimeError("server exited at start:\n" + "\n".join(self.lines))
        self.rest: list[str] = []
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        self.rest.extend(line.rstrip("\n") for line in self.proc.stdout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.join(timeout=5)


class Emit(Served):
    def __init__(self, data: Path, profile: str | None = None, module: str = "emit") -> None:
        # ``python -m emit`` is the ``emit`` command; run from the project root, it serves
        # this tree's emit. ``module="bench.front"``: the same with the hot routes served
        # below Quart (an experiment, bench/front.py).
        command = [sys.executable, "-m", module]
        if profile is not None:
            command = [*profiled(profile), module]
        command += ["serve", "--data", str(data), "--port", "0", "--rate-limit", "1000000"]
        super().__init__(command, lambda line: line.startswith("  public token"))
        self.url = self.lines[0].split()[3]
        self.space = self.value("space id")
        self.producer = {"x-api-key": self.value("producer key"), **JSON_HEADERS}
        self.worker = {"x-api-key": self.value("worker key"), **JSON_HEADERS}
        self.jobs = f"/api/v1/spaces/{self.space}/jobs"

    def value(self, label: str) -> str:
        line = next(line for line in self.lines if line.strip().startswith(label))
        return line.split()[len(label.split())]


class Bare(Served):
    def __init__(self, profile: str | None = None) -> None:
        command = [sys.executable, "-m", "bench.http", "--serve-bare"]
        if profile is not None:
            command = [*profiled(profile), "bench.http", "--serve-bare"]
        super().__init__(command, lambda line: line.startswith("http://"))
        self.url = self.lines[-1]


PROFILE_ON, PROFILE_OFF = signal.SIGUSR1, signal.SIGUSR2


def profiled(out: str) -> list[str]:
    """The start of a command running a module under a profiler that SIGUSR1 starts and
    SIGUSR2 stops (writing ``out``): the profile holds the measured window only, not the
    server's start (imports, store) or its idle time after."""
    return [sys.executable, "-m", "bench.http", "--run-profiled", out, "--"]


def run_profiled(out: str, argv: list[str]) -> None:
    import cProfile
    import runpy

    profiler = cProfile.Profile()

    def toggle(signum: int, frame: object) -> None:
        if signum == PROFILE_ON:
            profiler.enable()
        else:
            profiler.disable()
            profiler.dump_stats(out)

    signal.signal(PROFILE_ON, toggle)
    signal.signal(PROFILE_OFF, toggle)
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def serve_bare() -> None:
    """The baseline server: one POST route that reads the body and answers a small JSON,
    served as emit.http.server serves (same Hypercorn settings); stops on SIGTERM."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from quart import request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")

    @app.route("/bare", methods=["POST"])
    async def bare() -> dict[str, Any]:
        await request.get_data()
        return {"ok": True}

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 10.0
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75

    async def main() -> None:
        stop = trio.Event()

        async def serving(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(serving)
                print(urls[0], flush=True)
                async for _ in signals:
                    stop.set()
                    break

    trio.run(main)


class Beanstalkd:
    def __init__(self, flags: list[str]) -> None:
        self.binlog = tempfile.mkdtemp(prefix="emit-bench-beanstalkd-")
        self.port = free_port()
        binary = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
        self.proc = subprocess.Popen(
            [binary, "-l", "127.0.0.1", "-p", str(self.port), "-b", self.binlog, *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"beanstalkd exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("beanstalkd did not start listening") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.binlog, ignore_errors=True)


# ------------------------------------------------------------------------- clients


@dataclass(frozen=True, slots=True)
class Window:
    count: int
    seconds: float
    server_cpu: float
    """Share of one core the server process used over the window."""
    client_cpu: float
    server_seconds: float
    """CPU seconds the server process used over the window."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds


class Gang:
    """Threads started together behind a barrier; counts what they did, times the window
    from the release to the last one's end, and the CPU both sides used meanwhile. The
    first exception in any thread is raised in the caller."""

    def __init__(self, server_pid: int, *, profiled: bool = False) -> None:
        self.server_pid = server_pid
        self.profiled = profiled
        """Signal the server to start its profiler at the release and stop it at the end."""
        self.errors: list[BaseException] = []

    def run(
        self,
        bodies: list[Callable[[threading.Barrier], int]],
        limit: float,
        end: Callable[[], float] | None = None,
    ) -> Window:
        """``end`` gives the window's end when it is not the last thread's end (workers
        still parked in a long poll after the last job was done)."""
        barrier = threading.Barrier(len(bodies) + 1)
        counts = [0] * len(bodies)
        ends = [0.0] * len(bodies)

        def guarded(index: int) -> None:
            try:
                counts[index] = bodies[index](barrier)
            except BaseException as exc:
                self.errors.append(exc)
                barrier.abort()
            ends[index] = time.perf_counter()

        threads = [
            threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(len(bodies))
        ]
        for thread in threads:
            thread.start()
        with contextlib.suppress(threading.BrokenBarrierError):  # a thread failed: raised below
            barrier.wait(timeout=START_TIMEOUT)
        start = time.perf_counter()
        if self.profiled:
            os.kill(self.server_pid, PROFILE_ON)
        server0, client0 = cpu_seconds(self.server_pid), time.process_time()
        for thread in threads:
            thread.join(timeout=limit)
        if self.profiled:
            os.kill(self.server_pid, PROFILE_OFF)
        if self.errors:
            raise self.errors[0]
        if any(thread.is_alive() for thread in threads):
            raise RuntimeError(f"clients still running after {limit:.0f} s")
        server = cpu_seconds(self.server_pid) - server0
        client = time.process_time() - client0
        # After `end`, only parked polls remain: nearly no CPU, so the shares are of the window.
        seconds = (end() if end else max(ends)) - start
        return Window(sum(counts), seconds, server / seconds, client / seconds, server)


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:300]}"
        )
    return response


# --------------------------------------------------------------- (a) quick-start flow

POLL_ONE = b'{"count":1}'
RESULT = b'{"result":{"ok":true}}'


def flow_worker(emit: Emit, seconds: float, warmup: int) -> Callable[[threading.Barrier], int]:
    """create -> poll(count 1) -> ack -> complete, one job at a time, no lease sent."""

    def body(barrier: threading.Barrier) -> int:
        with httpx.Client(base_url=emit.url, timeout=30) as http:

            def one(i: int) -> None:
                expect(http.post(emit.jobs, content=job_body(i), headers=emit.producer), 201)
                polled = expect(
                    http.post(f"{emit.jobs}/poll", content=POLL_ONE, headers=emit.worker), 200
                )
                (job,) = polled.json()["jobs"]
                expect(http.post(f"/api/v1/jobs/{job['id']}/ack", headers=emit.worker), 200)
                expect(
                    http.post(
                        f"/api/v1/jobs/{job['id']}/complete", content=RESULT, headers=emit.worker
                    ),
                    200,
                )

            for i in range(warmup):
                one(i)
            barrier.wait()
            deadline = time.perf_counter() + seconds
            done = 0
            while time.perf_counter() < deadline:
                one(done)
                done += 1
            return done

    return body


def bare_client(bare: Bare, seconds: float, warmup: int) -> Callable[[threading.Barrier], int]:
    def body(barrier: threading.Barrier) -> int:
        with httpx.Client(base_url=bare.url, timeout=30) as http:
            for i in range(warmup):
                expect(http.post("/bare", content=job_body(i), headers=JSON_HEADERS), 200)
            barrier.wait()
            deadline = time.perf_counter() + seconds
            done = 0
            while time.perf_counter() < deadline:
                expect(http.post("/bare", content=job_body(done), headers=JSON_HEADERS), 200)
                done += 1
            return done

    return body


def quick_start(emit: Emit, bare: Bare, args: argparse.Namespace) -> None:
    limit = args.seconds + 60
    emit_runs: list[Window] = []
    bare_runs: list[Window] = []
    for _ in range(args.rounds):  # interleaved, so drift on the machine hits both alike
        bare_runs.append(
            Gang(bare.pid).run(
                [bare_client(bare, args.seconds, 20) for _ in range(args.workers)], limit
            )
        )
        emit_runs.append(
            Gang(emit.pid).run(
                [flow_worker(emit, args.seconds, 5) for _ in range(args.workers)], limit
            )
        )
    flow_report(
        f"(a) quick-start flow, unbatched: {args.workers} client threads, "
        f"{args.seconds:g} s windows, best of {args.rounds}",
        bare_runs,
        emit_runs,
    )


def flow_report(title: str, bare_runs: list[Window], emit_runs: list[Window]) -> None:
    """The table of (a) and (a'): the best window of each, the ratio the target judges,
    and the same by server CPU per request."""
    best_bare = max(bare_runs, key=lambda w: w.rate)
    best_emit = max(emit_runs, key=lambda w: w.rate)
    quarter = best_bare.rate / 4
    bare_cost, emit_cost = per_request(bare_runs, 1), per_request(emit_runs, 4)
    print(title)
    print(
        f"    {'':<27}{'rate':>22}  {'server CPU':>10}  {'client CPU':>10}  {'server CPU/req':>14}"
    )
    print(
        f"    {'bare quart-trio POST':<27}{best_bare.rate:>12,.0f} req/s{'':>5}  "
        f"{best_bare.server_cpu:>10.0%}  {best_bare.client_cpu:>10.0%}  {bare_cost:>11.2f} ms"
    )
    print(
        f"    {'emit create+poll+ack+done':<27}{best_emit.rate:>12,.0f} jobs/s{'':>4}  "
        f"{best_emit.server_cpu:>10.0%}  {best_emit.client_cpu:>10.0%}  {emit_cost:>11.2f} ms"
    )
    print(f"    {'':<27}{4 * best_emit.rate:>12,.0f} req/s")
    print(
        f"    emit jobs/s / (bare req/s / 4) : {best_emit.rate / quarter:5.0%}   "
        f"target >= {FLOW_TARGET:.0%}"
    )
    print(
        f"    the same by server CPU per request (bare / emit): {bare_cost / emit_cost:5.0%}"
        "   (no client limit can flatter this one)"
    )
    print(
        "    all rounds: emit jobs/s "
        + ", ".join(f"{w.rate:,.0f}" for w in emit_runs)
        + "; bare req/s "
        + ", ".join(f"{w.rate:,.0f}" for w in bare_runs)
    )


def quick_start_lean(
    emit: Emit, bare: Bare, args: argparse.Namespace, front: Emit | None = None
) -> None:
    """(a) again with the lean client of (c'): one trio process, raw HTTP/1.1 keep-alive
    sockets, --lean-workers connections, so the client costs the server's core far less
    than httpx does (about a quarter of the CPU per request here). Same flow, same bodies,
    same bare route, windows interleaved, best of --rounds. With ``front`` (--front), the
    same flow against the server of bench/front.py in the same rounds: (a'')."""
    emit_runs: list[Window] = []
    bare_runs: list[Window] = []
    front_runs: list[Window] = []
    for _ in range(args.rounds):
        bare_runs.append(trio.run(lean_window, bare, args.lean_workers, args.seconds, bare_loop))
        emit_runs.append(trio.run(lean_window, emit, args.lean_workers, args.seconds, flow_loop))
        if front is not None:
            front_runs.append(
                trio.run(lean_window, front, args.lean_workers, args.seconds, flow_loop)
            )
    flow_report(
        f"(a') the same with the lean client: {args.lean_workers} connections in one trio "
        f"process, {args.seconds:g} s windows, best of {args.rounds}",
        bare_runs,
        emit_runs,
    )
    if front is not None:
        flow_report(
            "(a'') the same, the hot routes served below Quart (bench/front.py, an "
            "experiment; same bare runs)",
            bare_runs,
            front_runs,
        )


class LeanConnection:
    """bench/realtime.py's raw HTTP/1.1 client, opened again when the server said it
    closes the connection (Hypercorn does after 1,000 requests; such a close carries no
    further request, so nothing is sent twice)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.http: Any = None

    async def connect(self) -> None:
        from bench.realtime import Http1

        await self.aclose()
        self.http = await Http1.open(self.host, self.port)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.stream.aclose()
            self.http = None

    async def post(self, path: str, key: bytes, body: bytes, status: int) -> bytes:
        if self.http is None or self.http.closing:
            await self.connect()
        got, answer = await self.http.post(path, key, body)
        if got != status:
            raise RuntimeError(f"POST {path} -> {got}: {answer[:300]!r}")
        return bytes(answer)


async def flow_loop(emit: Any, connection: LeanConnection, i: int) -> int:
    """One job of the quick-start flow: what ``flow_worker`` does, on the lean client."""
    producer = emit.producer["x-api-key"].encode()
    worker = emit.worker["x-api-key"].encode()
    await connection.post(emit.jobs, producer, job_body(i), 201)
    (job,) = json.loads(await connection.post(f"{emit.jobs}/poll", worker, POLL_ONE, 200))["jobs"]
    await connection.post(f"/api/v1/jobs/{job['id']}/ack", worker, b"", 200)
    await connection.post(f"/api/v1/jobs/{job['id']}/complete", worker, RESULT, 200)
    return 1


async def bare_loop(bare: Any, connection: LeanConnection, i: int) -> int:
    await connection.post("/bare", b"-", job_body(i), 200)
    return 1


async def lean_window(server: Served, workers: int, seconds: float, loop: Any) -> Window:
    """``workers`` lean connections each running ``loop`` for ``seconds`` after a warm-up;
    the window is timed from the release to the last one's end."""
    counts = [0] * workers
    ends = [0.0] * workers
    release = trio.Event()
    warm = [trio.Event() for _ in range(workers)]

    async def run(index: int) -> None:
        connection = LeanConnection(server.url)
        for i in range(5):
            await loop(server, connection, i)
        warm[index].set()
        await release.wait()
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            counts[index] += await loop(server, connection, counts[index])
        ends[index] = time.perf_counter()

    async with trio.open_nursery() as nursery:
        for index in range(workers):
            nursery.start_soon(run, index)
        for event in warm:
            await event.wait()
        start = time.perf_counter()
        server0, client0 = cpu_seconds(server.pid), time.process_time()
        release.set()
    server_cpu = cpu_seconds(server.pid) - server0
    client_cpu = time.process_time() - client0
    elapsed = max(ends) - start
    return Window(sum(counts), elapsed, server_cpu / elapsed, client_cpu / elapsed, server_cpu)


def per_request(windows: list[Window], requests: int) -> float:
    """Server CPU milliseconds per HTTP request, over all rounds."""
    return sum(w.server_seconds for w in windows) * 1000 / sum(w.count * requests for w in windows)


def cpu(window: Window) -> str:
    return f"server CPU {window.server_cpu:4.0%}, client CPU {window.client_cpu:4.0%}"


# ----------------------------------------------------------------- (b) batched path


def emit_batched(
    emit: Emit, total: int, batch: int, workers: int, *, profiled: bool = False
) -> Window:
    lock = threading.Lock()
    state = {"done": 0, "end": 0.0}
    poll = json.dumps({"count": 50, "wait": 1, "ack": True}).encode()

    def producer(barrier: threading.Barrier) -> int:
        with httpx.Client(base_url=emit.url, timeout=60) as http:
            barrier.wait()
            for start in range(0, total, batch):
                items = [
                    {"name": "bench", "payload": {"i": i}} for i in range(start, start + batch)
                ]
                body = json.dumps(items[: total - start]).encode()
                expect(http.post(emit.jobs, content=body, headers=emit.producer), 201)
        return 0

    def worker(barrier: threading.Barrier) -> int:
        done = 0
        with httpx.Client(base_url=emit.url, timeout=60) as http:
            barrier.wait()
            while state["done"] < total:
                polled = expect(
                    http.post(f"{emit.jobs}/poll", content=poll, headers=emit.worker), 200
                )
                jobs = polled.json()["jobs"]
                if not jobs:
                    continue
                items = [
                    {"id": j["id"], "result": {"ok": True}, "leaseId": j["leaseId"]} for j in jobs
                ]
                answer = expect(
                    http.post(
                        f"{emit.jobs}/complete",
                        content=json.dumps({"jobs": items}).encode(),
                        headers=emit.worker,
                    ),
                    200,
                ).json()["results"]
                if any(item["status"] != 200 for item in answer):
                    raise RuntimeError(f"batch complete refused: {answer[:3]}")
                done += len(jobs)
                with lock:
                    state["done"] += len(jobs)
                    if state["done"] >= total:
                        state["end"] = time.perf_counter()
        return done

    gang = Gang(emit.pid, profiled=profiled)
    return gang.run([producer, *[worker] * workers], 300, lambda: state["end"])


def beanstalk_batched(server: Beanstalkd, total: int, workers: int) -> Window:
    lock = threading.Lock()
    state = {"done": 0, "end": 0.0}

    def connect() -> greenstalk.Client[Any]:
        return greenstalk.Client(("127.0.0.1", server.port), use="bench", watch="bench")

    def producer(barrier: threading.Barrier) -> int:
        with connect() as client:
            barrier.wait()
            for i in range(total):
                client.put(json.dumps({"name": "bench", "payload": {"i": i}}))
        return 0

    def worker(barrier: threading.Barrier) -> int:
        done = 0
        with connect() as client:
            barrier.wait()
            while state["done"] < total:
                try:
                    job = client.reserve(timeout=1)
                except greenstalk.TimedOutError:
                    continue
                client.delete(job)
                done += 1
                with lock:
                    state["done"] += 1
                    if state["done"] >= total:
                        state["end"] = time.perf_counter()
        return done

    return Gang(server.pid).run([producer, *[worker] * workers], 300, lambda: state["end"])


async def emit_batched_lean(emit: Emit, total: int, batch: int, workers: int) -> Window:
    """(b) on the lean client: one producer connection and ``workers`` worker
    connections in this trio process, the same requests and bodies as `emit_batched`."""
    producer_key = emit.producer["x-api-key"].encode()
    worker_key = emit.worker["x-api-key"].encode()
    poll = json.dumps({"count": 50, "wait": 1, "ack": True}).encode()
    state = {"done": 0, "end": 0.0}
    finished = trio.Event()

    async def produce(connection: LeanConnection) -> None:
        for start in range(0, total, batch):
            items = [{"name": "bench", "payload": {"i": i}} for i in range(start, start + batch)]
            await connection.post(
                emit.jobs, producer_key, json.dumps(items[: total - start]).encode(), 201
            )

    async def work(connection: LeanConnection) -> None:
        while state["done"] < total:
            jobs = json.loads(await connection.post(f"{emit.jobs}/poll", worker_key, poll, 200))[
                "jobs"
            ]
            if not jobs:
                continue
            items = [{"id": j["id"], "result": {"ok": True}, "leaseId": j["leaseId"]} for j in jobs]
            body = json.dumps({"jobs": items}).encode()
            answer = json.loads(
                await connection.post(f"{emit.jobs}/complete", worker_key, body, 200)
            )
            if any(item["status"] != 200 for item in answer["results"]):
                raise RuntimeError(f"batch complete refused: {answer['results'][:3]}")
            state["done"] += len(jobs)
            if state["done"] >= total and not finished.is_set():
                state["end"] = time.perf_counter()
                finished.set()

    connections = [LeanConnection(emit.url) for _ in range(workers + 1)]
    try:
        for connection in connections:  # connected before the clock starts
            await connection.connect()
        start = time.perf_counter()
        server0, client0 = cpu_seconds(emit.pid), time.process_time()
        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce, connections[0])
                for connection in connections[1:]:
                    nursery.start_soon(work, connection)
                await finished.wait()
                server_cpu = cpu_seconds(emit.pid) - server0
                client_cpu = time.process_time() - client0
                nursery.cancel_scope.cancel()  # the other workers sit in a long poll
    finally:
        for connection in connections:
            await connection.aclose()
    seconds = state["end"] - start
    return Window(total, seconds, server_cpu / seconds, client_cpu / seconds, server_cpu)


def batched(emit: Emit, args: argparse.Namespace, front: Emit | None = None) -> None:
    """(b) with httpx threads and (b') with the lean client, each round beside both
    beanstalkd runs, rounds interleaved; with ``front`` (--front), (b'') too: (b') against
    the server of bench/front.py."""
    labels = ("emit", "emit lean", "front lean", "beanstalkd", "beanstalkd -f0")
    runs: dict[str, list[Window]] = {label: [] for label in labels}
    for _ in range(args.rounds):
        runs["emit"].append(emit_batched(emit, args.jobs, args.batch, args.workers))
        runs["emit lean"].append(
            trio.run(emit_batched_lean, emit, args.jobs, args.batch, args.workers)
        )
        if front is not None:
            runs["front lean"].append(
                trio.run(emit_batched_lean, front, args.jobs, args.batch, args.workers)
            )
        for label, flags in (("beanstalkd", []), ("beanstalkd -f0", ["-f0"])):
            server = Beanstalkd(flags)
            try:
                runs[label].append(beanstalk_batched(server, args.jobs, args.workers))
            finally:
                server.stop()
    if front is None:
        del runs["front lean"]
    best = {label: max(windows, key=lambda w: w.rate) for label, windows in runs.items()}
    print(
        f"(b) batched lifecycle: {args.jobs:,} jobs a round, 1 producer + {args.workers} "
        f"workers, best of {args.rounds}; (b') the same on the lean client"
        + ("; (b'') (b') with the hot routes below Quart (bench/front.py)" if front else "")
    )
    print(f"    {'':<60}{'rate':>13}  {'server CPU':>10}  {'client CPU':>10}")
    rows = (
        ("emit", f"(b) emit, httpx threads: create {args.batch}/req, poll 50, complete"),
        ("emit lean", f"(b') emit, lean client: create {args.batch}/req, poll 50, complete"),
        ("front lean", "(b'') the same, hot routes below Quart (an experiment)"),
        ("beanstalkd", "beanstalkd -b, fsync <= every 50 ms: put, reserve, delete"),
        ("beanstalkd -f0", "beanstalkd -b -f0, fsync every write: put, reserve, delete"),
    )
    for label, text in rows:
        if label not in best:
            continue
        window = best[label]
        print(
            f"    {text:<60}{window.rate:>6,.0f} jobs/s  {window.server_cpu:>10.0%}  "
            f"{window.client_cpu:>10.0%}"
        )
    for label, name in (("emit", "(b) "), ("emit lean", "(b')"), ("front lean", "(b'')")):
        if label not in best:
            continue
        print(
            f"    {name} emit / beanstalkd: {best[label].rate / best['beanstalkd'].rate:.2f}x "
            f"(default fsync), {best[label].rate / best['beanstalkd -f0'].rate:.2f}x (-f0)   "
            f"target >= {BATCH_TARGET:g}x"
        )
    print(
        "    all rounds, jobs/s: "
        + "; ".join(
            f"{label} " + ", ".join(f"{w.rate:,.0f}" for w in windows)
            for label, windows in runs.items()
        )
    )


# ------------------------------------------------------------- (c) delivery latency

POLL_PARKED = json.dumps({"count": 1, "wait": 30, "ack": True}).encode()
STOP = -1


def latency(emit: Emit, args: argparse.Namespace) -> None:
    total = args.warmup + args.latency_jobs
    delivered = [threading.Event() for _ in range(total)]
    received = [0.0] * total
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with httpx.Client(base_url=emit.url, timeout=60) as http:
                while True:
                    polled = http.post(
                        f"{emit.jobs}/poll", content=POLL_PARKED, headers=emit.worker
                    )
                    now = time.perf_counter()
                    for job in expect(polled, 200).json()["jobs"]:
                        seq = job["payload"]["seq"]
                        if seq != STOP:
                            received[seq] = now
                            delivered[seq].set()
                        expect(
                            http.post(
                                f"/api/v1/jobs/{job['id']}/complete",
                                content=RESULT,
                                headers=emit.worker,
                            ),
                            200,
                        )
                        if seq == STOP:
                            return
        except BaseException as exc:
            errors.append(exc)

    def create(http: httpx.Client, seq: int) -> None:
        body = json.dumps({"name": "bench", "payload": {"seq": seq}}).encode()
        expect(http.post(emit.jobs, content=body, headers=emit.producer), 201)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for thread in threads:
        thread.start()
    samples: list[float] = []
    round_trips: list[float] = []
    with httpx.Client(base_url=emit.url, timeout=60) as http:
        time.sleep(0.5)  # let the workers park
        try:
            for seq in range(total):
                sent = time.perf_counter()
                create(http, seq)
                answered = time.perf_counter()
                if not delivered[seq].wait(10):
                    raise RuntimeError(f"job {seq} not delivered within 10 s") from (
                        errors[0] if errors else None
                    )
                if seq >= args.warmup:
                    samples.append((received[seq] - sent) * 1000)
                    round_trips.append((answered - sent) * 1000)
        finally:
            for _ in threads:
                create(http, STOP)
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    print(
        f"(c) create -> delivered, {args.workers} workers parked in poll wait 30 (ack true), "
        f"{len(samples):,} jobs one at a time"
    )
    print(
        f"    latency   : p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, max {max(samples):6.2f} ms   "
        f"targets p50 <= {P50_TARGET_MS:g} ms, p99 <= {P99_TARGET_MS:g} ms"
    )
    print(
        f"    create RTT: p50 {percentile(round_trips, 0.5):6.2f} ms, "
        f"p99 {percentile(round_trips, 0.99):6.2f} ms (the producer's 201, for reference)"
    )


def latency_lean(emit: Emit, args: argparse.Namespace) -> None:
    """(c) again with a lean client: one trio process, raw HTTP/1.1 keep-alive sockets
    (bench/realtime.py's), no httpx and no threads. What it measures is closer to the
    server's own latency; both are printed, the target is judged on this one and on (c)."""
    from bench.realtime import Http1

    total = args.warmup + args.latency_jobs
    delivered = [trio.Event() for _ in range(total)]
    received = [0.0] * total
    host, port = emit.url.removeprefix("http://").rsplit(":", 1)
    producer = emit.producer["x-api-key"].encode()
    worker_key = emit.worker["x-api-key"].encode()

    async def worker(ready: trio.Event) -> None:
        http = await Http1.open(host, int(port))
        ready.set()
        while True:
            try:
                status, answer = await http.post(f"{emit.jobs}/poll", worker_key, POLL_PARKED)
            except ConnectionError:
                # Hypercorn closes a connection after 1,000 requests (keep_alive_max_requests);
                # a closed connection carried no request, so polling again is safe.
                http = await Http1.open(host, int(port))
                continue
            now = time.perf_counter()
            assert status == 200, answer
            for job in json.loads(answer)["jobs"]:
                seq = job["payload"]["seq"]
                try:
                    await http.post(f"/api/v1/jobs/{job['id']}/complete", worker_key, RESULT)
                except ConnectionError:
                    http = await Http1.open(host, int(port))
                    await http.post(f"/api/v1/jobs/{job['id']}/complete", worker_key, RESULT)
                if seq == STOP:
                    return
                if not 0 <= seq < total:
                    continue  # left over from an earlier phase
                received[seq] = now
                delivered[seq].set()

    async def run() -> tuple[list[float], list[float]]:
        samples: list[float] = []
        round_trips: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(args.workers):
                ready = trio.Event()
                nursery.start_soon(worker, ready)
                await ready.wait()
            http = await Http1.open(host, int(port))
            await trio.sleep(0.5)  # let the workers park
            for n, seq in enumerate([*range(total), *[STOP] * args.workers]):
                # The idempotency key makes a resend after a dropped connection safe.
                body = json.dumps(
                    {"name": "bench", "payload": {"seq": seq}, "idempotencyKey": f"lean-{n}"}
                ).encode()
                sent = time.perf_counter()
                try:
                    status, answer = await http.post(emit.jobs, producer, body)
                except ConnectionError:
                    http = await Http1.open(host, int(port))
                    status, answer = await http.post(emit.jobs, producer, body)
                answered = time.perf_counter()
                assert status == 201, answer
                if seq == STOP:
                    continue
                with trio.fail_after(10):
                    await delivered[seq].wait()
                if seq >= args.warmup:
                    samples.append((received[seq] - sent) * 1000)
                    round_trips.append((answered - sent) * 1000)
        return samples, round_trips

    samples, round_trips = trio.run(run)
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    print("(c') the same with a lean client (trio, raw HTTP/1.1 sockets, no threads)")
    print(
        f"    latency   : p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, max {max(samples):6.2f} ms   "
        f"targets p50 <= {P50_TARGET_MS:g} ms, p99 <= {P99_TARGET_MS:g} ms"
    )
    print(
        f"    create RTT: p50 {percentile(round_trips, 0.5):6.2f} ms, "
        f"p99 {percentile(round_trips, 0.99):6.2f} ms"
    )


# --------------------------------------------------------------------------- profile


def profile(args: argparse.Namespace) -> None:
    """(a) against the bare server and against emit, then (b) against emit, each server
    under cProfile for the measured window only; own time per request (per job for (b))
    by package, the inclusive share of JSON, and emit's top functions under (a)."""
    folder = Path(tempfile.mkdtemp(prefix="emit-bench-http-"))
    out = Path(args.profile).resolve()
    out.mkdir(parents=True, exist_ok=True)
    limit = args.seconds + 60
    try:
        bare = Bare(profile=str(out / "bare.prof"))
        try:
            window = Gang(bare.pid, profiled=True).run(
                [bare_client(bare, args.seconds, 20) for _ in range(args.workers)], limit
            )
            written(out / "bare.prof")
        finally:
            bare.stop()
        bare_requests = window.count
        print(f"(a) bare under cProfile: {window.rate:,.0f} req/s, {cpu(window)}")
        emit = Emit(folder / "a", profile=str(out / "emit.prof"))
        try:
            window = Gang(emit.pid, profiled=True).run(
                [flow_worker(emit, args.seconds, 5) for _ in range(args.workers)], limit
            )
            written(out / "emit.prof")
        finally:
            emit.stop()
        emit_requests = 4 * window.count
        print(f"(a) emit under cProfile: {window.rate:,.0f} jobs/s, {cpu(window)}")
        emit = Emit(folder / "b", profile=str(out / "emit-batched.prof"))
        try:
            window = emit_batched(emit, args.jobs, args.batch, args.workers, profiled=True)
            written(out / "emit-batched.prof")
        finally:
            emit.stop()
        batched_jobs = window.count
        print(f"(b) emit under cProfile: {window.rate:,.0f} jobs/s, {cpu(window)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bare_stats = pstats.Stats(str(out / "bare.prof"))
    emit_stats = pstats.Stats(str(out / "emit.prof"))
    batched_stats = pstats.Stats(str(out / "emit-batched.prof"))
    per_bare = {k: v / bare_requests * 1000 for k, v in by_package(bare_stats).items()}
    per_emit = {k: v / emit_requests * 1000 for k, v in by_package(emit_stats).items()}
    per_job = {k: v / batched_jobs * 1000 for k, v in by_package(batched_stats).items()}
    print(
        f"own time by package, event-loop thread, measured window only, ms (cProfile "
        f"inflates Python code; epoll is idle wait): (a) per request, {bare_requests:,} bare "
        f"and {emit_requests:,} emit requests; (b) per job, {batched_jobs:,} jobs"
    )
    print(f"    {'package':<26} {'(a) bare':>9} {'(a) emit':>9} {'emit-bare':>9} {'(b) emit':>9}")
    names = sorted(set(per_bare) | set(per_emit), key=lambda n: -per_emit.get(n, 0.0))
    for name in names[:25]:
        b, e, j = per_bare.get(name, 0.0), per_emit.get(name, 0.0), per_job.get(name, 0.0)
        print(f"    {name:<26} {b:9.3f} {e:9.3f} {e - b:+9.3f} {j:9.3f}")
    b, e, j = sum(per_bare.values()), sum(per_emit.values()), sum(per_job.values())
    print(f"    {'total':<26} {b:9.3f} {e:9.3f} {e - b:+9.3f} {j:9.3f}")
    for label, stats, count in (
        ("(a) bare", bare_stats, bare_requests),
        ("(a) emit", emit_stats, emit_requests),
        ("(b) emit", batched_stats, batched_jobs),
    ):
        spent, whole = json_time(stats), sum(by_package(stats).values())
        print(
            f"JSON encode + decode, inclusive, {label}: {spent / count * 1000:.3f} ms "
            f"per {'job' if label == '(b) emit' else 'request'}, {spent / whole:.1%} of the "
            f"event-loop thread's profiled time"
        )
    if args.top:
        emit_stats.sort_stats("tottime").print_stats(args.top)
        emit_stats.sort_stats("cumulative").print_stats(args.top)


JSON_ENTRIES = {
    ("json/encoder.py", "encode"),
    ("json/__init__.py", "loads"),
    ("~", "<orjson.dumps>"),
    ("~", "<orjson.loads>"),
}


def json_time(stats: pstats.Stats) -> float:
    """Inclusive seconds in JSON: stdlib json's encode and loads (every dumps of the app,
    Quart and emit.codec goes through JSONEncoder.encode), or orjson's."""
    total = 0.0
    for (filename, _, name), (_, _, _, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if any(filename.endswith(f) and name == n for f, n in JSON_ENTRIES):
            total += cumtime
    return total


def written(path: Path) -> None:
    """Wait for a profiler to finish writing ``path``."""
    deadline = time.monotonic() + 30
    size = -1
    while not path.exists() or path.stat().st_size != size or size <= 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no profile written to {path}")
        size = path.stat().st_size if path.exists() else -1
        time.sleep(0.5)


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Own (tottime) seconds summed by package."""
    totals: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = package_of(filename, name)
        totals[key] = totals.get(key, 0.0) + tottime
    return totals


def package_of(filename: str, name: str) -> str:
    if filename == "~":  # a C function
        if "epoll" in name:
            return "epoll (idle wait)"
        if "socket" in name:
            return "socket calls (C)"
        return "other C functions"
    if filename.startswith("<"):
        return "generated code"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for root in ("emit", "actors"):
        if root in parts:
            rest = parts[parts.index(root) :]
            return "/".join(rest[:2]).removesuffix(".py")
    if "python3.11" in parts:
        rest = parts[parts.index("python3.11") + 1 :]
        return "stdlib " + rest[0].removesuffix(".py")
    return filename


# ------------------------------------------------------------------------------ main


def main(args: argparse.Namespace) -> None:
    if args.profile:
        profile(args)
        return
    data = Path(tempfile.mkdtemp(prefix="emit-bench-http-"))
    emit = bare = front = None
    try:
        emit = Emit(data / "data")
        bare = Bare()
        if args.front:
            front = Emit(data / "front", module="bench.front")
        started = time.perf_counter()
        quick_start(emit, bare, args)
        quick_start_lean(emit, bare, args, front)
        bare.stop()
        batched(emit, args, front)
        latency(emit, args)
        latency_lean(emit, args)
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        for server in (bare, emit, front):
            if server is not None:
                server.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="client threads (workers)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--lean-workers", type=int, default=16, help="(a'): lean client connections"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="(a): length of a window")
    parser.add_argument("--jobs", type=int, default=20_000, help="(b): jobs a round")
    parser.add_argument("--batch", type=int, default=500, help="(b): jobs a create request")
    parser.add_argument("--latency-jobs", type=int, default=2_000, help="(c): jobs sampled")
    parser.add_argument("--warmup", type=int, default=100, help="(c): jobs not sampled")
    parser.add_argument(
        "--front",
        action="store_true",
        help="also run (a') and (b') with the hot routes below Quart (bench/front.py)",
    )
    parser.add_argument("--profile", metavar="DIR", help="only profile both servers under (a)")
    parser.add_argument("--top", type=int, default=30, help="--profile: functions listed")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-profiled", metavar="FILE", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.run_profiled:
        run_profiled(args.run_profiled, rest[1:] if rest[:1] == ["--"] else rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    elif args.serve_bare:
        serve_bare()
    else:
        main(args)
