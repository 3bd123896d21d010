"""Benchmark of emit's cluster, run by hand from the project root:
``.venv/bin/python -m bench.cluster`` (``--help`` for the knobs).

Every node is an ``emit serve`` process of its own (``--rate-limit 1000000``, logging at
warning), in a session of its own so its CPU counts every process it runs. PostgreSQL is
a throwaway local cluster (the tests' ``running_cluster``) with ``fsync`` and
``full_page_writes`` turned back on (``ALTER SYSTEM`` and a reload), so a commit waits
for the disk exactly as SQLite's synchronous=FULL does. Measures, in one run:

  (1) the batched lifecycle over HTTP: per space one producer task creating --batch jobs
      a request and --workers worker tasks polling count 50 with wait 1 and ack true,
      then one batch complete per poll; every request goes to a node picked at random
      (as behind a load balancer), so a request for a space owned elsewhere is
      forwarded. --spaces spaces, so the work spreads over the owners. For one node on
      SQLite (FULL) and 1, 2 and 3 nodes on PostgreSQL (one database each, all started
      once), and the 3 nodes again with every request sent straight to its space's
      owner (no hop: it splits what a third node costs between the hops and being one
      more node); rounds interleaved across the configurations; jobs/s from the first
      create to the last complete, median and range over --rounds. A 503 (a space
      moving, or a node's routes a tick behind) is sent again and counted.
  (2) CPU per job over the same windows: every node's processes (user + system, from
      /proc) and PostgreSQL's server processes (the postmaster, its live children, and
      what its exited children used); from them a projection of N nodes on N machines.
  (3) failover: 3 nodes on PostgreSQL with --lease s leases; the owner of a space is
      killed (SIGKILL); the time from the kill to the first successful poll on that
      space through another node, polled every 10 ms; a new node joins after each
      cycle; p50 and p99 over --failovers cycles.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import trio

from bench.client import Connection, Served, percentile
from bench.proc import TICKS, stolen_seconds
from bench.stores import durable_postgres

ADMIN_KEY = "emit_admin_" + "b" * 43
SECRET = "bench-cluster-secret-0123456789"
POLL_BATCH = b'{"count":50,"wait":1,"ack":true}'
POLL_NOW = b'{"count":1}'
LEASE = 10.0
"""(1)'s nodes keep the default ownership lease."""


# ------------------------------------------------------------------- CPU from /proc


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            yield int(entry), fields


def session_cpu(leader: int) -> float:
    """CPU seconds of every live process in the session ``leader`` leads, and of the
    exited children its leader has waited for."""
    total = 0.0
    for pid, fields in _processes():
        if int(fields[3]) == leader:
            total += int(fields[11]) + int(fields[12])
            if pid == leader:
                total += int(fields[13]) + int(fields[14])
    return total / TICKS


def family_cpu(parent: int) -> float:
    """CPU seconds of ``parent`` (PostgreSQL's postmaster), its live children, and its
    exited children (PostgreSQL's backends come and go with connections)."""
    total = 0.0
    for pid, fields in _processes():
        if pid == parent:
            total += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == parent:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


# -------------------------------------------------------------------------- nodes


class Node(Served):
    """``emit serve`` in a session of its own: on a PostgreSQL ``store`` as node
    ``name`` of its cluster, else on a fresh SQLite data directory (FULL)."""

    def __init__(self, name: str, data: Path, store: str | None, lease: float) -> None:
        command = [sys.executable, "-m", "emit", "serve", "--data", str(data / name),
                   "--port", "0", "--rate-limit", "1000000", "--grace", "5"]  # fmt: skip
        if store is not None:
            command += ["--store", store, "--node-id", name, "--ownership-lease", str(lease)]
        env = {
            **os.environ,
            "EMIT_ADMIN_KEY": ADMIN_KEY,
            "EMIT_CLUSTER_SECRET": SECRET,
            "EMIT_LOG_LEVEL": "warning",
        }
        last = "  node " if store is not None else "  dashboard"
        super().__init__(command, lambda line: line.startswith(last), env=env, session=True)
        self.name = name
        self.url = self.lines[0].split()[3]

    def cpu(self) -> float:
        return session_cpu(self.pid)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@dataclass(slots=True)
class Space:
    id: str
    producer: bytes
    worker: bytes

    @property
    def jobs(self) -> str:
        return f"/api/v1/spaces/{self.id}/jobs"


def make_space(url: str, name: str) -> Space:
    with httpx.Client(
        base_url=url, timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as http:
        made = http.post("/api/v1/spaces", json={"name": name})
        made.raise_for_status()
        space = made.json()["id"]
        keys = []
        for key, body in (
            ("producer", {"scopes": ["jobs:create", "jobs:read"]}),
            ("worker", {"preset": "worker"}),
        ):
            token = http.post(f"/api/v1/spaces/{space}/tokens", json={"name": key, **body})
            token.raise_for_status()
            keys.append(token.json()["key"].encode())
    return Space(space, keys[0], keys[1])


def owners(url: str) -> dict[str, str]:
    """The live ownership leases: space id -> node id."""
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT space_id, node_id FROM space_owners WHERE expires_at > clock_timestamp()"
        ).fetchall()
    return {space: node for space, node in rows}


def settled(
    url: str, spaces: list[Space], nodes: list[Node], lease: float, within: float = 60
) -> dict[str, str]:
    """Wait until every space has a live owner among ``nodes`` and the owners have not
    changed for longer than a node takes to refresh its routes (lease/3); the owners."""
    names = {node.name for node in nodes}
    deadline = time.monotonic() + within
    last: dict[str, str] = {}
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = owners(url)
        if now != last:
            last, since = now, time.monotonic()
        elif (
            all(now.get(s.id) in names for s in spaces)
            and time.monotonic() - since > lease / 3 + 0.5
        ):
            return now
        time.sleep(0.1)
    raise RuntimeError(f"ownership did not settle: {last}")


@dataclass
class Config:
    label: str
    nodes: list[Node]
    spaces: list[Space]
    url: str | None = None
    windows: list[Window] = field(default_factory=list)
    requests: int = 0
    """Requests sent in the windows."""
    direct: dict[str, str] | None = None
    """Each space's owner's URL, when every request goes straight to its owner."""
    unavailable: int = 0
    """503 answers, each sent again."""
    spread: str = "1"
    """How many of the loaded spaces each node owns, e.g. ``3/2/1``."""


@dataclass(frozen=True, slots=True)
class Window:
    jobs: int
    seconds: float
    node_cpu: float
    """CPU seconds of all the configuration's nodes together."""
    postgres_cpu: float
    client_cpu: float
    steal: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


# ------------------------------------------------------------------ (1) the lifecycle


async def lifecycle(config: Config, per_space: int, batch: int, workers: int) -> tuple[int, float]:
    """Every space's producer and workers, each request to a random node; jobs and
    seconds from the first create to the last complete."""
    urls = [node.url for node in config.nodes]
    total = per_space * len(config.spaces)
    state = {"done": 0, "end": 0.0}
    finished = trio.Event()
    pick = random.Random(7)

    def connections(space: Space) -> list[Connection]:
        if config.direct is not None:
            return [Connection(config.direct[space.id])]
        return [Connection(url) for url in urls]

    async def send(mine: list[Connection], path: str, key: bytes, body: bytes, status: int) -> Any:
        """To a random node; a 503 (a space moving, or a node's routes a tick behind
        its owner's claim) is refused before any work, so it is sent again."""
        while True:
            config.requests += 1
            try:
                return json.loads(await pick.choice(mine).post(path, key, body, status))
            except RuntimeError as error:
                if " -> 503: " not in str(error):
                    raise
                config.unavailable += 1
                await trio.sleep(0.05)

    async def produce(space: Space, mine: list[Connection]) -> None:
        for start in range(0, per_space, batch):
            items = [
                {"name": "bench", "payload": {"i": i}}
                for i in range(start, min(per_space, start + batch))
            ]
            await send(mine, space.jobs, space.producer, json.dumps(items).encode(), 201)

    async def work(space: Space, mine: list[Connection], done: list[int]) -> None:
        while done[0] < per_space:
            jobs = (await send(mine, f"{space.jobs}/poll", space.worker, POLL_BATCH, 200))["jobs"]
            if not jobs:
                continue
            items = [{"id": j["id"], "result": {"ok": True}, "leaseId": j["leaseId"]} for j in jobs]
            body = json.dumps({"jobs": items}).encode()
            answer = await send(mine, f"{space.jobs}/complete", space.worker, body, 200)
            if any(item["status"] != 200 for item in answer["results"]):
                raise RuntimeError(f"batch complete refused: {answer['results'][:3]}")
            done[0] += len(jobs)
            state["done"] += len(jobs)
            if state["done"] >= total and not finished.is_set():
                state["end"] = time.perf_counter()
                finished.set()

    plan = [
        (space, connections(space), [connections(space) for _ in range(workers)])
        for space in config.spaces
    ]
    everyone = [c for _, p, ws in plan for c in [*p, *(c for w in ws for c in w)]]
    try:
        for connection in everyone:  # connected before the clock starts
            await connection.connect()
        start = time.perf_counter()
        with trio.fail_after(600):
            async with trio.open_nursery() as nursery:
                for space, producer, worker_connections in plan:
                    done = [0]
                    nursery.start_soon(produce, space, producer)
                    for mine in worker_connections:
                        nursery.start_soon(work, space, mine, done)
                await finished.wait()
                nursery.cancel_scope.cancel()  # the other workers sit in a long poll
    finally:
        for connection in everyone:
            with contextlib.suppress(Exception):
                await connection.aclose()
    return total, state["end"] - start


def window(config: Config, postmaster: int, args: argparse.Namespace) -> Window:
    cpu0 = sum(node.cpu() for node in config.nodes)
    pg0, client0, steal0 = family_cpu(postmaster), time.process_time(), stolen_seconds()
    jobs, seconds = trio.run(
        lifecycle, config, args.jobs // len(config.spaces), args.batch, args.workers
    )
    return Window(
        jobs,
        seconds,
        sum(node.cpu() for node in config.nodes) - cpu0,
        family_cpu(postmaster) - pg0,
        time.process_time() - client0,
        stolen_seconds() - steal0,
    )


def throughput(configs: list[Config], postmaster: int, args: argparse.Namespace) -> None:
    # Warm every node (connections, key caches, the owners' actors) before any window.
    for config in configs:
        trio.run(lifecycle, config, 100, args.batch, args.workers)
        config.unavailable = config.requests = 0
    for n in range(args.rounds):
        order = configs[n % len(configs) :] + configs[: n % len(configs)]
        for config in order:
            config.windows.append(window(config, postmaster, args))
            w = config.windows[-1]
            print(f"    round {n + 1} {config.label:<14} {w.rate:>7,.0f} jobs/s", flush=True)
    print(
        f"(1) batched lifecycle over HTTP: {args.jobs:,} jobs a round over {args.spaces} spaces, "
        f"per space 1 producer ({args.batch}/create) + {args.workers} workers (poll 50, ack, "
        f"batch complete), each request to a random node; {args.rounds} rounds interleaved"
    )
    print(
        f"    {'':<14}{'jobs/s median':>14}  {'range':>15}  {'nodes CPU':>9}  {'PG CPU':>7}  "
        f"{'node µs/job':>11}  {'PG µs/job':>9}  {'client':>6}  {'req/job':>7}  {'503s':>4}  spaces a node"
    )
    for config in configs:
        ws = config.windows
        rates = [w.rate for w in ws]
        seconds = sum(w.seconds for w in ws)
        jobs = sum(w.jobs for w in ws)
        node_cpu = sum(w.node_cpu for w in ws)
        pg_cpu = sum(w.postgres_cpu for w in ws) if config.url else 0.0
        print(
            f"    {config.label:<14}{statistics.median(rates):>14,.0f}  "
            f"{min(rates):>6,.0f} - {max(rates):>6,.0f}  {node_cpu / seconds:>9.0%}  "
            f"{pg_cpu / seconds:>7.0%}  {node_cpu / jobs * 1e6:>11,.0f}  "
            f"{pg_cpu / jobs * 1e6:>9,.0f}  {sum(w.client_cpu for w in ws) / seconds:>6.0%}  "
            f"{config.requests / jobs:>7.3f}  {config.unavailable:>4}  {config.spread}"
        )
    steal = sum(w.steal for c in configs for w in c.windows)
    elapsed = sum(w.seconds for c in configs for w in c.windows)
    print(f"    host steal over the windows: {steal / elapsed:.0%} of one CPU")
    project(configs)


def project(configs: list[Config]) -> None:
    """(2): N nodes on N machines, from the CPU each job costs a node and PostgreSQL."""
    by_nodes = {len(c.nodes): c for c in configs if c.url is not None and c.direct is None}
    one = by_nodes[1]
    jobs = sum(w.jobs for w in one.windows)
    node_one = sum(w.node_cpu for w in one.windows) / jobs
    pg = sum(w.postgres_cpu for w in one.windows) / jobs
    # The forwarding cost: what a job costs all the nodes of the 3-node (or widest)
    # configuration beyond one node, spread over its (N-1)/N forwarded share.
    widest = max(by_nodes)
    wide = by_nodes[widest]
    node_wide = sum(w.node_cpu for w in wide.windows) / sum(w.jobs for w in wide.windows)
    hop = (node_wide - node_one) / ((widest - 1) / widest) if widest > 1 else 0.0
    checks = []
    for n, config in sorted(by_nodes.items()):
        if 1 < n < widest:
            cost = sum(w.node_cpu for w in config.windows) / sum(w.jobs for w in config.windows)
            checks.append(f"{n} nodes say {(cost - node_one) / ((n - 1) / n) * 1e6:,.0f} µs")
    print(
        "(2) projection to N nodes on N machines (one core each for emit; PostgreSQL on a "
        "machine of its own)"
    )
    print(
        f"    measured: one node {node_one * 1e6:,.0f} µs CPU a job; {widest} nodes "
        f"{node_wide * 1e6:,.0f} µs a job all nodes together, so a forwarded job costs "
        f"{hop * 1e6:,.0f} µs more ({'; '.join(checks) or 'no other'}); PostgreSQL "
        f"{pg * 1e6:,.0f} µs a job"
    )
    for config in configs:
        if config.direct is not None:
            cost = sum(w.node_cpu for w in config.windows) / sum(w.jobs for w in config.windows)
            n = len(config.nodes)
            print(
                f"    {n} nodes, each request straight to its space's owner: {cost * 1e6:,.0f} µs "
                f"a job all nodes together: of the {(node_wide - node_one) * 1e6:,.0f} µs more "
                f"than one node, {(cost - node_one) * 1e6:,.0f} µs is being {n} nodes and "
                f"{(node_wide - cost) * 1e6:,.0f} µs the hops"
            )
    print(
        f"    {'N':>4}  {'µs CPU/job, all nodes':>22}  {'jobs/s, emit-bound':>19}  {'PG cores needed':>15}"
    )
    for n in (1, 2, 3, 4, 8):
        per_job = node_one + hop * (n - 1) / n
        rate = n / per_job
        print(f"    {n:>4}  {per_job * 1e6:>22,.0f}  {rate:>19,.0f}  {rate * pg:>15.1f}")
    print(
        "    assumptions: each node is CPU-bound on one core (one trio event loop); the work "
        "spreads evenly over the owners; a share (N-1)/N of the requests pays the hop "
        "measured here; PostgreSQL's CPU per job stays as measured and it has the cores "
        "the last column asks (else it is the ceiling); the network between machines adds "
        "latency, not CPU"
    )


# ------------------------------------------------------------------- (3) failover


def failover(url: str, data: Path, args: argparse.Namespace) -> list[float]:
    nodes = [Node(f"fail-{n}", data, url, args.lease) for n in range(1, 4)]
    count = 3
    try:
        spaces = [make_space(nodes[0].url, f"fail-{n}") for n in range(args.spaces)]
        samples: list[float] = []
        for cycle in range(args.failovers):
            now = settled(url, spaces, nodes, args.lease)
            space = spaces[cycle % len(spaces)]
            victim = next(node for node in nodes if node.name == now[space.id])
            others = [node for node in nodes if node is not victim]
            took = trio.run(kill_and_poll, victim, others, space)
            samples.append(took)
            print(
                f"    failover {cycle + 1}: {victim.name} killed, {space.id} answered after {took:.2f} s",
                flush=True,
            )
            nodes.remove(victim)
            victim.stop()
            count += 1
            nodes.append(Node(f"fail-{count}", data, url, args.lease))
        return samples
    finally:
        for node in nodes:
            node.stop()


async def kill_and_poll(victim: Node, others: list[Node], space: Space) -> float:
    connections = [Connection(node.url) for node in others]
    for connection in connections:
        await connection.connect()
    killed = time.perf_counter()
    victim.kill()
    n = 0
    with trio.fail_after(120):
        while True:
            connection = connections[n % len(connections)]
            n += 1
            try:
                await connection.post(f"{space.jobs}/poll", space.worker, POLL_NOW, 200)
            except (RuntimeError, ConnectionError, OSError):
                await connection.aclose()
                await trio.sleep(0.01)
                continue
            took = time.perf_counter() - killed
            break
    for connection in connections:
        await connection.aclose()
    return took


def report_failover(samples: list[float], lease: float) -> None:
    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    print(
        f"(3) failover, --ownership-lease {lease:g}: kill -9 of a space's owner -> first "
        f"successful poll on it through another node, {len(samples)} cycles"
    )
    print(
        f"    p50 {p50:.2f} s, p99 {p99:.2f} s, min {min(samples):.2f} s, max {max(samples):.2f} s"
    )
    scale = 10 / lease
    print(
        f"    with the default 10 s lease: every term but the rebuild is a share of the "
        f"lease (a renewal every lease/3, a tick every lease/3), so about {p50 * scale:.1f} s "
        f"(p50) and {p99 * scale:.1f} s (p99)"
    )


# ------------------------------------------------------------------------------ main


def main(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()}", flush=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emit-bench-cluster-") as tmp, durable_postgres() as pg:
        data = Path(tmp)
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        configs: list[Config] = []
        try:
            if not args.skip_throughput:
                sqlite = Node("sqlite", data, None, args.lease)
                configs.append(Config("1 node SQLite", [sqlite], []))
                for count in (1, 2, 3):
                    url = pg.create_database()
                    nodes = [Node(f"pg{count}-{n}", data, url, LEASE) for n in range(1, count + 1)]
                    configs.append(
                        Config(f"{count} node{'s' if count > 1 else ''} PG", nodes, [], url)
                    )
                for config in configs:
                    config.spaces = [
                        make_space(config.nodes[0].url, f"s{n}") for n in range(args.spaces)
                    ]
                    config.spread = str(len(config.spaces))
                    if config.url is not None:
                        found = settled(config.url, config.spaces, config.nodes, LEASE)
                        counts = [
                            sum(found[s.id] == node.name for s in config.spaces)
                            for node in config.nodes
                        ]
                        config.spread = "/".join(str(n) for n in sorted(counts, reverse=True))
                three = configs[-1]
                found = owners(str(three.url))
                where = {node.name: node.url for node in three.nodes}
                direct = {space.id: where[found[space.id]] for space in three.spaces}
                configs.append(
                    Config("3 PG, owner", three.nodes, three.spaces, three.url, direct=direct)
                )
                configs[-1].spread = three.spread
                throughput(configs, postmaster, args)
        finally:
            for config in configs:
                for node in config.nodes:
                    node.stop()
        if args.failovers:
            samples = failover(pg.create_database(), data, args)
            report_failover(samples, args.lease)
    print(f"load average at end: {os.getloadavg()}; total {time.perf_counter() - began:.0f} s")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=30_000, help="(1): jobs a round, all spaces")
    parser.add_argument("--spaces", type=int, default=6)
    parser.add_argument("--batch", type=int, default=100, help="(1): jobs a create request")
    parser.add_argument("--workers", type=int, default=2, help="(1): worker tasks a space")
    parser.add_argument("--failovers", type=int, default=20, help="(3): cycles; 0 skips it")
    parser.add_argument("--lease", type=float, default=2.0, help="(3): --ownership-lease")
    parser.add_argument("--skip-throughput", action="store_true", help="(3) alone")
    return parser


if __name__ == "__main__":
    main(parser().parse_args())
