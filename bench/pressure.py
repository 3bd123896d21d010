"""Hostile and careless clients against a real server, run by hand from the project root:
``.venv/bin/python -m bench.pressure [--tree DIR]``.

A real ``emit serve`` (``python -m emit serve --rate-limit 1000000`` on a fresh data
directory and a loopback port, started with ``DIR`` as its working directory, so that
tree's ``emit`` is the one imported; by default this tree) is measured while this
process holds, all at once:

- ``--idle`` TCP connections that connect and send nothing;
- ``--subscribers`` WebSocket subscribers to the space stream, with the producer key:
  raw sockets, their receive buffer shrunk to 4 KiB, that do the handshake and then
  never read;
- ``--slowloris`` clients that send a request's headers one byte a second, never ending
  them.

They are opened at most OPEN_AT_ONCE at a time (Hypercorn's listen backlog is 100). Then,
for ``--seconds``, three loops run side by side: ``GET /healthz``, each on a fresh
connection (what a load balancer's probe does; the latency includes the connect);
``POST /spaces/S/jobs`` (one small job) on one keep-alive connection, as a client
library sends it; and a flood of creates (FLOOD_BATCH jobs with 200-character names in
one request every FLOOD_EVERY s: ~600-byte ``created`` messages on the space stream), so
that every subscriber's queue fills and the hub cuts it off (1013). Each measured loop
sends one request at a time, on a schedule of one every PROBE_EVERY (10 ms; a request
answered late delays the next), so that the probes do not saturate the server
themselves; both also run for QUIET_SECONDS before any hostile client opens.

The server's file descriptors (``/proc/PID/fd``) are sampled, and the sockets it still
holds for each kind of client are counted (its socket inodes matched to the clients'
ports through ``/proc/net/tcp``): when the window ends, and again after the clients
stayed open and silent (the slowloris clients still dripping) for LINGER_SECONDS more.
The table gives each probe's latencies, with when its slowest request was sent (seconds
into the window; the flood starts with it).
A subscriber that was cut off but whose socket the server still holds is what a client
that never reads can pin. Loopback only, bounded (about a minute with the defaults);
every socket is closed and the server's whole session ended, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bench.client import ROOT, Connection, EmitServer, Http1
from bench.proc import cpu_seconds, stolen_seconds

OPEN_AT_ONCE = 100
OPEN_TIMEOUT = 20.0
"""Seconds one hostile connection may take to open (a full backlog retries SYNs)."""
PROBE_EVERY = 0.01
"""A measured loop's next request is due this long after the last was (or when it is
answered, if later): ~100 a second each, so the probes do not saturate the server."""
REQUEST_TIMEOUT = 10.0
"""A measured request not answered within this counts as failed."""
QUIET_SECONDS = 5.0
LINGER_SECONDS = 30.0
"""Quiet time after the window before the last count: longer than the server's 30 s
``send_timeout`` (the new build's bound on a stalled write)."""
SLOW_BYTE = 1.0
DRAIN_SECONDS = 5.0
SUBSCRIBER_RCVBUF = 4096
FLOOD_BATCH = 250
FLOOD_EVERY = 0.5
FLOOD_JOBS = [{"name": "x" * 200}] * FLOOD_BATCH
"""Jobs with the longest name: each ``created`` message of the space stream is ~600 bytes."""
KINDS = ("idle", "subscribers", "slowloris")


# ------------------------------------------------------------------------ the server


class Server(EmitServer):
    """``emit serve`` from ``tree``, in a session of its own (its store's writer process
    included), and what it holds open."""

    def __init__(self, tree: Path, data: Path) -> None:
        super().__init__(data, tree=tree, session=True)
        self.port = int(self.url.rsplit(":", 1)[1])

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def held(self, ports: dict[int, str]) -> dict[str, int]:
        """How many sockets the server holds open for each kind of client, by the
        clients' ports (a socket it closed has no inode of its fds any more)."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(int(link[8:-1]))
        counts = dict.fromkeys(KINDS, 0)
        with open("/proc/net/tcp") as table:
            next(table)
            for row in table:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], int(fields[9])
                if int(local.split(":")[1], 16) == self.port and inode in inodes:
                    kind = ports.get(int(remote.split(":")[1], 16))
                    if kind is not None:
                        counts[kind] += 1
        return counts


# ------------------------------------------------------------------------ clients


@dataclass
class Hostile:
    """The hostile clients' sockets, and the kind of client behind each local port."""

    sockets: list[trio.socket.SocketType] = field(default_factory=list)
    ports: dict[int, str] = field(default_factory=dict)
    subscribers: list[trio.socket.SocketType] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    async def open(
        self, port: int, kind: str, hello: bytes = b"", rcvbuf: int = 0
    ) -> trio.socket.SocketType | None:
        """Connect (and send ``hello``, and read a 101 answer to it, if given); None if
        that failed."""
        sock = trio.socket.socket()
        self.sockets.append(sock)
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                if rcvbuf:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                await sock.connect(("127.0.0.1", port))
                if hello:
                    await sock.send(hello)
                    answer = b""
                    while b"\r\n\r\n" not in answer:
                        chunk = await sock.recv(1024)
                        if not chunk:
                            raise ConnectionError("closed before the handshake's answer")
                        answer += chunk
                    if b" 101 " not in answer.split(b"\r\n", 1)[0]:
                        raise ConnectionError(answer[:200].decode(errors="replace"))
        except (OSError, ConnectionError, trio.TooSlowError):
            self.failed[kind] += 1
            sock.close()
            return None
        self.ports[sock.getsockname()[1]] = kind
        if kind == "subscribers":
            self.subscribers.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


async def drip(sock: trio.socket.SocketType) -> None:
    """Slowloris: a request's headers, one byte a second, never ended."""
    head = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: "
    sent = 0
    with contextlib.suppress(OSError):
        while True:
            await sock.send(head[sent : sent + 1] if sent < len(head) else b"a")
            sent += 1
            await trio.sleep(SLOW_BYTE)


async def last_word(sock: trio.socket.SocketType) -> str:
    """Read a subscriber's socket to its end: how its stream ended (``close 1013``: the
    hub's cut-off; ``end``: the connection ended without a close frame; ``open``:
    neither within DRAIN_SECONDS)."""
    buffer = b""
    with trio.move_on_after(DRAIN_SECONDS):
        try:
            while True:
                while len(buffer) >= 2:  # the server's frames: unmasked
                    length, at = buffer[1] & 0x7F, 2
                    if length >= 126:
                        at = 4 if length == 126 else 10
                        if len(buffer) < at:
                            break
                        length = int.from_bytes(buffer[2:at], "big")
                    if len(buffer) < at + length:
                        break
                    if buffer[0] & 0x0F == 0x8:
                        return f"close {int.from_bytes(buffer[at : at + 2], 'big')}"
                    buffer = buffer[at + length :]
                chunk = await sock.recv(65536)
                if not chunk:
                    return "end"
                buffer += chunk
        except OSError:
            return "end"
    return "open"


# ------------------------------------------------------------------------ measuring


@dataclass
class Latencies:
    start: float = field(default_factory=time.perf_counter)
    seconds: list[float] = field(default_factory=list)
    failed: int = 0
    worst: float = 0.0
    worst_at: float = 0.0
    """When the slowest request was sent, in seconds from ``start``."""

    def row(self) -> str:
        if not self.seconds:
            return f"{0:>6} {'-':>7} {'-':>7} {'-':>7} {'-':>6} {self.failed:>5}"
        ms = sorted(s * 1000 for s in self.seconds)
        p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return (
            f"{len(ms):>6} {p50:>7.1f} {p99:>7.1f} {ms[-1]:>7.1f} {self.worst_at:>6.1f}"
            f" {self.failed:>5}"
        )


async def timed(out: Latencies, request: Callable[[], Awaitable[bool]]) -> None:
    started = time.perf_counter()
    try:
        with trio.fail_after(REQUEST_TIMEOUT):
            ok = await request()
    except (OSError, ConnectionError, RuntimeError, trio.TooSlowError):
        ok = False
    if ok:
        took = time.perf_counter() - started
        if took > out.worst:
            out.worst, out.worst_at = took, started - out.start
        out.seconds.append(took)
    else:
        out.failed += 1


async def measure(server: Server, seconds: float) -> tuple[Latencies, Latencies]:
    """``/healthz`` on fresh connections and creates on one keep-alive connection,
    each sequential and paced, side by side, for ``seconds``."""
    health, create = Latencies(), Latencies()
    kept = Connection(server.url)

    async def healthz() -> bool:
        http = await Http1.open("127.0.0.1", server.port)
        try:
            got, _ = await http.request(b"GET", "/healthz", b"")
        finally:
            await http.aclose()
        return got == 200

    async def create_one() -> bool:
        await kept.post_json(server.jobs, server.producer, {"name": "probe"}, 201)
        return True

    async def loop(out: Latencies, request: Callable[[], Awaitable[bool]]) -> None:
        due = trio.current_time()
        while due < end:
            await timed(out, request)
            due += PROBE_EVERY
            await trio.sleep_until(due)

    end = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loop, health, healthz)
        nursery.start_soon(loop, create, create_one)
    await kept.aclose()
    return health, create


async def flood(server: Server, sent: list[int]) -> None:
    """Create FLOOD_BATCH jobs in one request every FLOOD_EVERY s, until cancelled;
    ``sent[0]`` counts them."""
    connection = Connection(server.url)
    try:
        while True:
            await connection.post_json(server.jobs, server.producer, FLOOD_JOBS, 201)
            sent[0] += FLOOD_BATCH
            await trio.sleep(FLOOD_EVERY)
    finally:
        await connection.aclose()  # closes the socket even when cancelled


@dataclass
class Run:
    opened: dict[str, int]
    open_seconds: float
    quiet: tuple[Latencies, Latencies]
    loaded: tuple[Latencies, Latencies]
    fds_before: int
    fds_max: int
    held_end: dict[str, int]
    fds_end: int
    held_after: dict[str, int]
    fds_after: int
    server_cpu: float
    stolen: float
    flooded: int
    ends: dict[str, int]
    """How the subscribers' streams ended, read when the run is over."""


async def pressure(server: Server, args: argparse.Namespace) -> Run:
    quiet = await measure(server, QUIET_SECONDS)
    fds_before = server.fds()

    hostile = Hostile()
    handshake = (
        f"GET /api/v1/realtime/spaces/{server.space}?token={server.producer.decode()} HTTP/1.1\r\n"
        "host: 127.0.0.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    ).encode()
    try:
        async with trio.open_nursery() as clients:
            started = time.perf_counter()
            limiter = trio.CapacityLimiter(OPEN_AT_ONCE)

            async def open_one(kind: str) -> None:
                async with limiter:
                    if kind == "subscribers":
                        await hostile.open(server.port, kind, handshake, SUBSCRIBER_RCVBUF)
                    elif (sock := await hostile.open(server.port, kind)) and kind == "slowloris":
                        clients.start_soon(drip, sock)

            async with trio.open_nursery() as opening:
                for kind, count in wanted(args).items():
                    for _ in range(count):
                        opening.start_soon(open_one, kind)
            open_seconds = time.perf_counter() - started

            fds_max = 0

            async def sample() -> None:
                nonlocal fds_max
                while True:
                    fds_max = max(fds_max, server.fds())
                    await trio.sleep(0.5)

            cpu0, stolen0 = cpu_seconds(server.pid), stolen_seconds()
            sent = [0]
            async with trio.open_nursery() as window:
                window.start_soon(flood, server, sent)
                window.start_soon(sample)
                loaded = await measure(server, args.seconds)
                window.cancel_scope.cancel()
            server_cpu = (cpu_seconds(server.pid) - cpu0) / args.seconds
            stolen = stolen_seconds() - stolen0
            held_end, fds_end = server.held(hostile.ports), server.fds()
            await trio.sleep(LINGER_SECONDS)
            held_after, fds_after = server.held(hostile.ports), server.fds()
            clients.cancel_scope.cancel()
        words: list[str] = []

        async def hear(sock: trio.socket.SocketType) -> None:
            words.append(await last_word(sock))

        async with trio.open_nursery() as drain:
            for sock in hostile.subscribers:
                drain.start_soon(hear, sock)
    finally:
        hostile.close()
    opened = {kind: list(hostile.ports.values()).count(kind) for kind in KINDS}
    return Run(
        opened, open_seconds, quiet, loaded, fds_before, fds_max, held_end, fds_end,
        held_after, fds_after, server_cpu, stolen, sent[0],
        {word: words.count(word) for word in sorted(set(words))},
    )  # fmt: skip


# ------------------------------------------------------------------------ main


def wanted(args: argparse.Namespace) -> dict[str, int]:
    return {"idle": args.idle, "subscribers": args.subscribers, "slowloris": args.slowloris}


def report(tree: Path, args: argparse.Namespace, run: Run, loads: tuple[str, str]) -> None:
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"emit serve from {tree} ({commit}); load average {loads[0]} -> {loads[1]}")
    print(
        f"hostile clients opened in {run.open_seconds:.1f} s: "
        + ", ".join(f"{run.opened[k]}/{wanted(args)[k]} {k}" for k in KINDS)
        + f"; {run.flooded} jobs created in batches (the flood) over the window"
    )
    quiet, hostile = f"quiet, {QUIET_SECONDS:.0f} s", f"hostile, {args.seconds:.0f} s"
    print(f"{'':24}{quiet:^43}   {hostile:^43}")
    head = f"{'n':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'max at':>6} {'fail':>5}"
    print(f"{'':24}{head}   {head}")
    for i, name in enumerate(("/healthz, fresh conn", "create, keep-alive")):
        print(f"{name:24}{run.quiet[i].row()}   {run.loaded[i].row()}")
    print(f"server CPU {run.server_cpu:.0%} of a core over the window; {run.stolen:.1f} s stolen")
    after = f"+{LINGER_SECONDS:.0f} s idle"
    print(f"{'sockets held':24}{'opened':>8} {'window end':>11} {after:>11}")
    for kind in KINDS:
        print(
            f"  {kind:22}{run.opened[kind]:>8} {run.held_end[kind]:>11} {run.held_after[kind]:>11}"
        )
    print(
        f"{'server fds':24}{run.fds_before:>8} {run.fds_end:>11} {run.fds_after:>11}"
        f"   (max {run.fds_max} during the window; 'opened': before the clients)"
    )
    ends = ", ".join(f"{count} {word}" for word, count in run.ends.items())
    print(f"how the subscribers' streams ended, read once the run is over: {ends}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="serve this tree's emit")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * sum(wanted(args).values()) + 200  # the server inherits it
    if hard != resource.RLIM_INFINITY and needed > hard:
        sys.exit(f"needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    tree = args.tree.resolve()
    load_start = Path("/proc/loadavg").read_text().split()[0]
    with tempfile.TemporaryDirectory(prefix="emit-pressure-") as tmp:
        server = Server(tree, Path(tmp) / "data")
        try:
            run = trio.run(pressure, server, args)
        except BaseException:
            server.stop()
            print("\n".join(server.rest)[-3000:], file=sys.stderr)
            raise
        server.stop()
    load_end = Path("/proc/loadavg").read_text().split()[0]
    report(tree, args, run, (load_start, load_end))


if __name__ == "__main__":
    main()
