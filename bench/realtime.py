"""Benchmark of the WebSocket job streams, run by hand from the project root:
``.venv/bin/python -m bench.realtime``.

Target (issue 5): 1,000 job-stream subscribers, 1,000 progress events/s in all, event
delivery latency p99 <= 50 ms; the server's memory is reported.

Three processes share this 2-core machine: the server, in its own process; the
subscribers, --subscribers trio-websocket clients in one child process, one per job, each
on ``ws://HOST/api/v1/realtime/{jobId}?token=PUBLIC`` (the space's progress-only token,
as a browser holds it); and the producer. Setup: --subscribers jobs are created over HTTP
and taken running with poll (count 50, ack true); the subscribers connect, at most
CONNECT_AT_ONCE handshakes at a time, and each waits for its ``init``. Then the producer
emits --rate progress events/s, paced: event k is due at start + k / rate and goes to job
k mod N (with the defaults, each job gets one a second), with its number and time.time()
at the moment it is sent in its ``message``. A subscriber stamps time.time() when
get_message returns, so latency = receive - send on this machine's one clock, end to end:
the producer's call, the durable commit (synchronous=FULL: the hub publishes an event only
once it is written), the hub, the server's WebSocket send and the client's read. Each
latency is also split at the event's ``timestamp`` (stamped by the server when it applies
the change, before the commit; ms resolution). The first --warmup seconds of events are
not sampled; the next --seconds are. Events not sent by LATE_LIMIT after the schedule's
end (the producer fell behind) are counted as unsent, so a run stops on time. The
producer wakes every PACE_TICK (5 ms) and sends the events due by then. Two producers,
each against a fresh server and a fresh subscriber process (--producer both runs both):
  (a) embedded: the server process runs emit's runtime and its HTTP app (``emit.serve``,
      the app ``emit serve`` runs, rate limit off) plus a producer task calling
      ``SpaceJobs.progress`` from --lanes concurrent tasks: the fan-out path without one
      HTTP request per event.
  (b) HTTP: ``python -m emit serve --rate-limit 1000000``, and the producer in this process:
      --connections keep-alive connections POSTing /api/v1/jobs/{id}/progress with the
      worker key, through the benches' HTTP/1.1 client on trio sockets (bench/client.py;
      about 0.2 ms of CPU a request here, pacing included). An event whose slot comes
      while every connection is busy goes late, on the first free one; "sent late" says
      by how much.
Printed for each: events sent and the rate reached, delivered and lost (sent but not
received --grace seconds after the last send), latency p50/p99/max and its split,
subscribers dropped (closed before the end: 1013 is the hub cutting off a slow client)
or not connected, the server's RSS (VmRSS from /proc) before and after subscribing, at
the end of the run and after the subscribers left, its peak (VmHWM), each process's CPU
share over the sampled window (one core = 100%), the CPU the hypervisor stole from this
machine meanwhile (/proc/stat; when it rises, so does every tail here), and the server's
over IDLE_SECONDS with every subscriber in and no events. Notes give the event loop's
long passes in the server and in the subscriber process (which tunes its collector as a
server does, since one process stands in for 1,000 browsers that share no heap).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio

from bench.client import ROOT, Connection, EmitServer, Served, percentile
from bench.proc import cpu_seconds, memory, stolen_seconds

P99_TARGET_MS = 50.0
CONNECT_AT_ONCE = 50
"""WebSocket handshakes in flight at once (Hypercorn's listen backlog is 100)."""
IDLE_SECONDS = 2.0
"""Seconds the server's CPU is read with every subscriber in and no events."""
PACE_TICK = 0.005
"""Seconds between the producer's wake-ups: the events due by then go out together."""
LATE_LIMIT = 1.0
"""Seconds past the schedule's end after which the producer gives up unsent events."""
SUBSCRIBE_TIMEOUT = 180.0


def mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    return {name: size / 2**20 for name, size in memory(pid).items()}


# ------------------------------------------------------------------- the producer


@dataclass
class Produced:
    """What a paced producer did: the events acknowledged (by number), the ones that
    failed or were never sent, how late each send was against its slot."""

    acked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unsent: int = 0
    late: list[float] = field(default_factory=list)
    """Seconds from each event's slot to its send."""
    first: float = 0.0
    """time.time() of the schedule's start and of the last acknowledgement."""
    last: float = 0.0


Send = Callable[[str, int, str], Awaitable[None]]


async def paced(
    send: Send, jobs: list[str], rate: float, warmup: float, seconds: float, lanes: int
) -> Produced:
    """Event k is due at start + k / rate, for job k mod N, percent (k // N) mod 101 and
    message "k time.time()". One ticker task wakes every PACE_TICK and hands each event
    due by then to ``lanes`` tasks through a channel; a lane takes the next one, sends it
    and waits for its answer. Events still unsent when the schedule ends are given up.

    The ticker, rather than one sleep per lane per event, and PACE_TICK rather than a
    wake-up per event: a trio sleep that expires costs 50-150 us of CPU (a cancel scope's
    deadline, its Cancelled unwound), and with the embedded producer that CPU is the
    server's: a sixth of it at 1,000/s with a sleep per event. Each event's send time is
    read when it is sent, so the latency measured is the event's own."""
    total = int(rate * (warmup + seconds))
    out = Produced()
    start = trio.current_time() + 0.05
    end = start + warmup + seconds
    out.first = time.time() + 0.05
    hand, take = trio.open_memory_channel[int](total)

    async def ticker() -> None:
        async with hand:
            k = 0
            while k < total:
                await trio.sleep_until(max(start + k / rate, trio.current_time() + PACE_TICK))
                now = trio.current_time()
                while k < total and start + k / rate <= now:
                    hand.send_nowait(k)
                    k += 1

    async def lane(take: trio.MemoryReceiveChannel[int]) -> None:
        async for k in take:
            due = start + k / rate
            now = trio.current_time()
            if now > end + LATE_LIMIT:
                out.unsent += 1
                continue
            out.late.append(now - due)
            try:
                await send(jobs[k % len(jobs)], (k // len(jobs)) % 101, f"{k} {time.time():.6f}")
            except Exception as exc:
                out.errors.append(f"event {k}: {exc!r}")
                continue
            out.acked.append(k)
            out.last = time.time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        async with take:
            for _ in range(lanes):
                nursery.start_soon(lane, take.clone())
    return out


async def produce_http(
    url: str, key: bytes, jobs: list[str], args: argparse.Namespace, window: Callable[[], None]
) -> Produced:
    """The HTTP producer: --connections keep-alive connections as the lanes. ``window``
    is called when the warm-up is over (to take the CPU readings)."""
    connections = [Connection(url) for _ in range(args.connections)]
    send_free, take_free = trio.open_memory_channel[Connection](len(connections))
    for connection in connections:
        await connection.connect()
        send_free.send_nowait(connection)

    async def send(job_id: str, percent: int, message: str) -> None:
        connection = await take_free.receive()
        try:
            body = {"percent": percent, "message": message}
            await connection.post_json(f"/api/v1/jobs/{job_id}/progress", key, body, 200)
        finally:
            send_free.send_nowait(connection)

    async with trio.open_nursery() as nursery:

        async def at_warmup_end() -> None:
            await trio.sleep(args.warmup + 0.05)
            window()

        nursery.start_soon(at_warmup_end)
        produced = await paced(send, jobs, args.rate, args.warmup, args.seconds, args.connections)
    for connection in connections:
        await connection.aclose()
    return produced


# ------------------------------------------------- child: the embedded-producer server


class LoopPasses(trio.abc.Instrument):
    """Times the event loop's passes (from waking up from I/O to waiting again): a long
    one holds every event in flight. Reports how many took over 10 ms, and the longest
    with the CPU the loop's thread used in it (less than its length: the thread was
    descheduled or waited for the GIL)."""

    def __init__(self) -> None:
        self.woke = self.cpu = 0.0
        self.passes = 0
        self.busy = 0.0
        self.long: list[tuple[float, float]] = []

    def after_io_wait(self, timeout: float) -> None:
        self.woke, self.cpu = time.perf_counter(), time.thread_time()

    def before_io_wait(self, timeout: float) -> None:
        if self.woke:
            took = time.perf_counter() - self.woke
            self.passes += 1
            self.busy += took
            if took > 0.010:
                self.long.append((took, time.thread_time() - self.cpu))

    def report(self) -> str:
        top = " ".join(
            f"{wall * 1000:.0f}/{cpu * 1000:.0f}" for wall, cpu in sorted(self.long)[-5:]
        )
        return (
            f"loop: {self.passes:,} passes, busy {self.busy:.1f} s, {len(self.long)} over 10 ms"
            + (f" (longest, ms wall/CPU: {top})" if top else "")
        )


def serve_embedded(base: Path, args: argparse.Namespace) -> None:
    """emit's runtime and HTTP app in this process, with a producer task: SIGUSR1 starts
    it on the jobs in BASE/jobs.json (answered with BASE/produced.json and a line
    "produced"); SIGTERM stops the server. Prints its keys, then "ready"."""
    import emit

    async def run() -> None:
        async with emit.open_runtime(base / "data") as rt:
            space = await rt.create_space("bench")
            worker = await rt.create_token(space.id, name="worker", preset="worker")
            producer = await rt.create_token(
                space.id, name="producer", scopes=["jobs:create", "jobs:read"]
            )
            jobs = rt.space(space.id)
            shutdown = trio.Event()

            async def send(job_id: str, percent: int, message: str) -> None:
                await jobs.progress(job_id, percent, message)

            async def produce() -> None:
                ids = json.loads(await trio.Path(base / "jobs.json").read_text())
                passes = LoopPasses()
                trio.lowlevel.add_instrument(passes)
                done = await paced(send, ids, args.rate, args.warmup, args.seconds, args.lanes)
                trio.lowlevel.remove_instrument(passes)
                # In a thread: encoding 25,000 events took the loop 100 ms, with the last
                # deliveries still to send.
                text = await trio.to_thread.run_sync(json.dumps, asdict(done))
                await trio.Path(base / "produced.json").write_text(text)
                print(passes.report(), flush=True)
                print("produced", flush=True)

            async with trio.open_nursery() as nursery:
                settings = emit.HttpSettings(rate=1_000_000)
                serving = partial(emit.serve, rt, port=0, settings=settings)
                urls = await nursery.start(partial(serving, shutdown_trigger=shutdown.wait))
                with trio.open_signal_receiver(
                    signal.SIGUSR1, signal.SIGTERM, signal.SIGINT
                ) as signals:
                    print(f"url {urls[0]}", flush=True)
                    print(f"space {space.id}", flush=True)
                    print(f"producer {producer.key}", flush=True)
                    print(f"worker {worker.key}", flush=True)
                    print(f"public {space.public_token}", flush=True)
                    print("ready", flush=True)
                    async for signum in signals:
                        if signum == signal.SIGUSR1:
                            nursery.start_soon(produce)
                        else:
                            rt.hub.end_all(1001)
                            shutdown.set()
                            nursery.cancel_scope.deadline = trio.current_time() + 15
                            break

    trio.run(run)


# ----------------------------------------------------------- child: the subscribers


def subscribe(args: argparse.Namespace) -> None:
    """One trio-websocket client per job in --subscribe-jobs; prints "ready CONNECTED
    FAILED SECONDS" once every client has its init (or failed), then reads "stop N" on
    stdin, waits until N progress events arrived (at most --grace seconds), closes the
    sockets and writes what it saw to --subscribe-out."""
    from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url

    jobs: list[str] = json.loads(Path(args.subscribe_jobs).read_text())
    samples: list[tuple[int, float, float, str]] = []
    dropped: list[tuple[str, int | None, str | None]] = []
    failed: list[str] = []
    others: list[str] = []
    sockets: list[Any] = []
    state: dict[str, Any] = {"settled": 0, "stopping": False, "expected": float("inf")}
    all_settled, all_received = trio.Event(), trio.Event()
    gate = trio.Semaphore(CONNECT_AT_ONCE)

    def settle() -> None:
        state["settled"] += 1
        if state["settled"] == len(jobs):
            all_settled.set()

    async def one(nursery: trio.Nursery, job_id: str) -> None:
        url = f"{args.subscribe}/api/v1/realtime/{job_id}?token={args.subscribe_token}"
        try:
            async with gate:
                ws = await connect_websocket_url(nursery, url)
                init = json.loads(await ws.get_message())
            if init.get("type") != "init":
                raise RuntimeError(f"first message {init!r}")
        except (OSError, HandshakeError, ConnectionClosed, RuntimeError) as exc:
            failed.append(f"{job_id}: {exc!r}")
            settle()
            return
        sockets.append(ws)
        settle()
        try:
            while True:
                message = await ws.get_message()
                now = time.time()
                event = json.loads(message)
                if event["type"] == "progress":
                    k, sent = event["data"]["message"].split()
                    samples.append((int(k), float(sent), now, event["timestamp"]))
                    if len(samples) >= state["expected"]:
                        all_received.set()
                else:
                    others.append(event["type"])
        except ConnectionClosed as closed:
            if not state["stopping"]:
                why = closed.reason
                dropped.append((job_id, *((why.code, why.reason) if why else (None, None))))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            for job_id in jobs:
                nursery.start_soon(one, nursery, job_id)
            await all_settled.wait()
            seconds = time.perf_counter() - started
            # This process stands in for 1,000 browsers, which do not share one heap:
            # with the default collector, full passes over its 1,000 connections paused
            # it for up to 90 ms, and went into every latency. Tuned as a server is
            # (emit.tune_gc).
            from emit.tuning import tune_gc

            tune_gc()
            state["passes"] = LoopPasses()
            trio.lowlevel.add_instrument(state["passes"])
            print(f"ready {len(sockets)} {len(failed)} {seconds:.3f}", flush=True)
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            state["expected"] = int(line.split()[1])
            if len(samples) >= state["expected"]:
                all_received.set()
            with trio.move_on_after(args.grace):
                await all_received.wait()
            state["stopping"] = True
            with trio.move_on_after(15):
                async with trio.open_nursery() as closing:
                    for ws in sockets:
                        closing.start_soon(ws.aclose)
            nursery.cancel_scope.cancel()

    trio.run(run)
    result = {
        "samples": samples,
        "dropped": dropped,
        "failed": failed,
        "others": others,
        "loop": state["passes"].report() if "passes" in state else "",
    }
    Path(args.subscribe_out).write_text(json.dumps(result))


class Subscribers:
    """The subscriber process, started and waited for until every client is in."""

    def __init__(self, ws_url: str, token: str, base: Path, grace: float) -> None:
        self.out = base / "received.json"
        command = [
            sys.executable, "-m", "bench.realtime", "--subscribe", ws_url,
            "--subscribe-token", token, "--subscribe-jobs", str(base / "jobs.json"),
            "--subscribe-out", str(self.out), "--grace", str(grace),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        watchdog = threading.Timer(SUBSCRIBE_TIMEOUT, self.proc.kill)
        watchdog.start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        watchdog.cancel()
        if not line.startswith("ready"):
            self.kill()
            raise RuntimeError(f"the subscribers did not start: {line!r}")
        _, connected, failed, seconds = line.split()
        self.connected, self.failed, self.seconds = int(connected), int(failed), float(seconds)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def finish(self, acked: list[int], grace: float) -> dict[str, Any]:
        """Say how many events were sent, wait for the process, and read what it saw."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"stop {len(acked)}\n")
        self.proc.stdin.flush()
        try:
            self.proc.wait(timeout=grace + 60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("the subscribers did not finish") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"the subscribers exited with {self.proc.returncode}")
        answer: dict[str, Any] = json.loads(self.out.read_text())
        return answer


# ------------------------------------------------------------------------- a phase


@dataclass
class Server:
    served: Served
    url: str
    space: str
    worker: bytes
    public: str
    producer: bytes

    @property
    def pid(self) -> int:
        return self.served.pid


FIRST_STEPS = ("Paste this into a shell", "  export EMIT_URL=", "Then make a first job", "  curl ",
               "Docs: ")  # fmt: skip
"""How the lines that follow the keys of a first start begin (`emit.cli.first_steps`)."""


def start_server(producer: str, base: Path, args: argparse.Namespace) -> Server:
    if producer == "http":
        emit = EmitServer(base / "data")
        return Server(emit, emit.url, emit.space, emit.worker, emit.public, emit.producer)
    command = [
        sys.executable, "-m", "bench.realtime", "--serve-embedded", str(base),
        "--rate", str(args.rate), "--warmup", str(args.warmup),
        "--seconds", str(args.seconds), "--lanes", str(args.lanes),
    ]  # fmt: skip
    served = Served(command, lambda line: line.startswith("ready"))
    found = dict(line.split(" ", 1) for line in served.lines if " " in line)
    return Server(
        served, found["url"], found["space"], found["worker"].encode(), found["public"],
        found["producer"].encode(),
    )  # fmt: skip


async def running_jobs(server: Server, count: int) -> list[str]:
    """``count`` jobs created over HTTP and taken running (poll count 50, ack true)."""
    jobs = f"/api/v1/spaces/{server.space}/jobs"
    taken: list[str] = []
    connection = Connection(server.url)
    for start in range(0, count, 1000):
        items = [
            {"name": "bench", "payload": {"i": i}, "timeoutSeconds": 3600}
            for i in range(start, min(count, start + 1000))
        ]
        await connection.post_json(jobs, server.producer, items, 201)
    poll = {"count": 50, "ack": True}
    while len(taken) < count:
        polled: Any = await connection.post_json(f"{jobs}/poll", server.worker, poll, 200)
        if not polled["jobs"]:
            raise RuntimeError("poll gave no job: fewer pending than created")
        taken += [job["id"] for job in polled["jobs"]]
    await connection.aclose()
    return taken


@dataclass
class Phase:
    label: str
    subscribers: Subscribers | None = None
    produced: Produced = field(default_factory=Produced)
    received: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    server_lines: list[str] = field(default_factory=list)


def run_phase(producer: str, base: Path, args: argparse.Namespace) -> Phase:
    phase = Phase(producer)
    base.mkdir(parents=True)
    server = start_server(producer, base, args)
    subscribers = None
    try:
        jobs = trio.run(running_jobs, server, args.subscribers)
        (base / "jobs.json").write_text(json.dumps(jobs))
        phase.memory["before subscribing"] = mib(server.pid)
        ws_url = server.url.replace("http://", "ws://")
        subscribers = phase.subscribers = Subscribers(ws_url, server.public, base, args.grace)
        phase.memory["subscribed"] = mib(server.pid)
        idle = cpu_seconds(server.pid)
        time.sleep(IDLE_SECONDS)
        phase.cpu["idle"] = (cpu_seconds(server.pid) - idle) / IDLE_SECONDS
        pids = {"server": server.pid, "subscribers": subscribers.pid}
        marks: list[tuple[float, dict[str, float]]] = []

        def window() -> None:
            readings = {name: cpu_seconds(pid) for name, pid in pids.items()}
            readings |= {"producer": time.process_time(), "stolen": stolen_seconds()}
            marks.append((time.perf_counter(), readings))

        if producer == "http":
            phase.produced = trio.run(produce_http, server.url, server.worker, jobs, args, window)
        else:
            os.kill(server.pid, signal.SIGUSR1)
            time.sleep(args.warmup + 0.05)
            window()
            deadline = time.monotonic() + args.seconds + 120
            while "produced" not in server.served.rest:
                if time.monotonic() > deadline or server.served.proc.poll() is not None:
                    raise RuntimeError("the embedded producer did not finish")
                time.sleep(0.05)
            phase.produced = Produced(**json.loads((base / "produced.json").read_text()))
        window()
        (start, first), (end, last) = marks
        phase.cpu |= {name: (last[name] - first[name]) / (end - start) for name in first}
        if producer != "http":
            del phase.cpu["producer"]  # the bench process only waited
        phase.memory["end of run"] = mib(server.pid)
        phase.received = subscribers.finish(phase.produced.acked, args.grace)
        time.sleep(1.0)
        phase.memory["subscribers gone"] = mib(server.pid)
    finally:
        if subscribers is not None:
            subscribers.kill()
        server.served.stop()
    phase.server_lines = [
        line
        for line in server.served.rest
        if line not in ("produced", "emit stopped", "")
        and not line.startswith(("stopping: finishing requests", "  space ", *FIRST_STEPS))
        and " INFO emit.access " not in line  # a line per request: not news
    ]
    return phase


# --------------------------------------------------------------------------- report


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    warmup_events = int(args.rate * args.warmup)
    notes: list[str] = []
    cells: dict[str, dict[str, str]] = {}
    for phase in phases:
        produced, received = phase.produced, phase.received
        subscribers = phase.subscribers
        assert subscribers is not None
        acked = set(produced.acked)
        sampled = [s for s in received["samples"] if s[0] >= warmup_events and s[0] in acked]
        seen = [s[0] for s in received["samples"]]
        latency = [(recv - sent) * 1000 for _, sent, recv, _ in sampled]
        to_stamp = [(epoch(stamp) - sent) * 1000 for _, sent, _, stamp in sampled]
        from_stamp = [(recv - epoch(stamp)) * 1000 for _, _, recv, stamp in sampled]
        lost = acked - set(seen)
        duplicates = len(seen) - len(set(seen))
        span = max(produced.last - produced.first, 1e-9)
        late = [x * 1000 for x in produced.late]
        late_text = (
            f"{percentile(late, 0.5):.1f} / {percentile(late, 0.99):.1f} / "
            f"{max(late, default=0):.0f} ms"
        )
        dropped = received["dropped"]
        codes = sorted({str(code) for _, code, _ in dropped})
        p99 = percentile(latency, 0.99)
        mem = phase.memory
        per_subscriber = (mem["subscribed"]["VmRSS"] - mem["before subscribing"]["VmRSS"]) * (
            1024 / max(subscribers.connected, 1)
        )
        cells[phase.label] = {
            "subscribers connected": f"{subscribers.connected:,} in {subscribers.seconds:.1f} s",
            "subscribers not connected": f"{subscribers.failed:,}",
            "events sent (acknowledged)": f"{len(produced.acked):,}",
            "producer rate reached": f"{len(produced.acked) / span:,.0f}/s",
            "sent late: p50 / p99 / max": late_text,
            "producer errors / unsent": f"{len(produced.errors):,} / {produced.unsent:,}",
            "events delivered": f"{len(seen):,} ({len(seen) / span:,.0f}/s)",
            "lost (sent, never received)": f"{len(lost):,}"
            + (f" ({duplicates} dup)" if duplicates else ""),
            "latency samples": f"{len(latency):,}",
            "latency p50 / p99 / max": f"{percentile(latency, 0.5):.1f} / {p99:.1f} / {max(latency, default=0):.0f} ms",
            "p99 target met": f"{'yes' if p99 <= P99_TARGET_MS else 'NO'} (<= {P99_TARGET_MS:g} ms)",
            "  send -> server stamp p50/p99": f"{percentile(to_stamp, 0.5):.1f} / {percentile(to_stamp, 0.99):.1f} ms",
            "  server stamp -> received p50/p99": f"{percentile(from_stamp, 0.5):.1f} / {percentile(from_stamp, 0.99):.1f} ms",
            "subscribers dropped": f"{len(dropped):,}"
            + (f" (codes {', '.join(codes)})" if codes else ""),
            "server RSS before subscribing": f"{mem['before subscribing']['VmRSS']:.1f} MiB",
            "server RSS subscribed": f"{mem['subscribed']['VmRSS']:.1f} MiB ({per_subscriber:.0f} KiB each)",
            "server RSS end of run": f"{mem['end of run']['VmRSS']:.1f} MiB",
            "server RSS subscribers gone": f"{mem['subscribers gone']['VmRSS']:.1f} MiB",
            "server RSS peak (VmHWM)": f"{mem['subscribers gone']['VmHWM']:.1f} MiB",
            "CPU, server, subscribed and idle": f"{phase.cpu['idle']:.0%}",
            "CPU, server process": f"{phase.cpu['server']:.0%}",
            "CPU, subscriber processes": f"{phase.cpu['subscribers']:.0%}",
            "CPU, producer (this process)": f"{phase.cpu['producer']:.0%}"
            if "producer" in phase.cpu
            else "(in server)",
            "CPU stolen by the host (of 2 CPUs)": f"{phase.cpu['stolen'] / 2:.0%}",
        }
        for line in produced.errors[:5]:
            notes.append(f"({phase.label}) producer error: {line}")
        for line in received["failed"][:5]:
            notes.append(f"({phase.label}) subscriber not connected: {line}")
        for job_id, code, reason in dropped[:5]:
            notes.append(f"({phase.label}) subscriber of {job_id} closed {code} {reason or ''}")
        if received["others"]:
            kinds = sorted(set(received["others"]))
            notes.append(
                f"({phase.label}) non-progress messages: {len(received['others'])} {kinds}"
            )
        if received.get("loop"):
            notes.append(f"({phase.label}) subscribers, {received['loop']}")
        for line in phase.server_lines[:20]:
            notes.append(f"({phase.label}) server: {line}")
        if not phase.server_lines:
            notes.append(f"({phase.label}) server printed nothing after its start (no errors)")
    titles = {
        "embedded": "(a) embedded producer",
        "http": f"(b) HTTP, {args.connections} conns",
    }
    labels = list(cells[phases[0].label])
    width = max(len(label) for label in labels) + 2
    print(f"{'':<{width}}" + "".join(f"{titles[phase.label]:<36}" for phase in phases))
    for label in labels:
        print(f"{label:<{width}}" + "".join(f"{cells[p.label][label]:<36}" for p in phases))
    for note in notes:
        print(note)


# ------------------------------------------------------------------------------ main


def main(args: argparse.Namespace) -> None:
    import emit

    base = Path(tempfile.mkdtemp(prefix="emit-bench-realtime-"))
    producers = ["embedded", "http"] if args.producer == "both" else [args.producer]
    print(
        f"emit {emit.__version__}, trio {trio.__version__}, CPython {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"{args.subscribers:,} job-stream subscribers (one per job, public token, one client "
        f"process), {args.rate:,.0f} progress events/s paced over them, {args.warmup:g} s "
        f"warm-up + {args.seconds:g} s sampled, grace {args.grace:g} s"
    )
    phases = []
    started = time.perf_counter()
    try:
        for producer in producers:
            phases.append(run_phase(producer, base / producer, args))
        report(phases, args)
    finally:
        print(
            f"total {time.perf_counter() - started:.0f} s; load average "
            f"{os.getloadavg()[0]:.2f} at the end (other work skews all numbers)"
        )
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="jobs, one client each")
    parser.add_argument("--rate", type=float, default=1000.0, help="progress events/s in all")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds not sampled")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds sampled")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to wait for stragglers")
    parser.add_argument("--producer", choices=["both", "embedded", "http"], default="both")
    parser.add_argument("--lanes", type=int, default=64, help="(a): concurrent progress calls")
    parser.add_argument("--connections", type=int, default=32, help="(b): HTTP connections")
    parser.add_argument("--serve-embedded", metavar="BASE", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", metavar="WS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe-token", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe-jobs", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_embedded:
        serve_embedded(Path(args.serve_embedded), args)
    elif args.subscribe:
        subscribe(args)
    else:
        main(args)
