"""What one hop between nodes adds, run by hand from the project root:
``.venv/bin/python -m bench.forwarding``.

Two nodes, each a process of its own serving one SQLite data directory (both read its
keys and spaces; only A's space actor serves the space): node A owns the space, node B
forwards it to A (emit.cluster.forwarding, a static router). One raw HTTP/1.1 keep-alive
client (bench/client.py) sends ``GET /api/v1/jobs/<id>`` one at a time, in windows taking
turns between A directly and B (one hop), and prints p50 and p99 of each and what the hop
adds. The nodes log at ``warning`` (no access log line per request): what is measured is
the hop. Findings: docs/scaling.md, "What it costs".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.client import Connection, Served, percentile

SECRET = "bench-cluster-secret-0123456789"


class Node(Served):
    """``python -m bench.forwarding --serve-node`` on ``data``; ``forward`` names the
    space to forward and where."""

    def __init__(self, data: Path, forward: str | None = None) -> None:
        command = [sys.executable, "-m", "bench.forwarding", "--serve-node", str(data)]
        if forward is not None:
            command += ["--forward", forward]
        super().__init__(command, lambda line: line.startswith("serving"), session=True)
        self.url = self.lines[-1].split()[1]


def serve_node(data: Path, forward: str | None) -> None:
    import emit
    from emit.cluster.forwarding import LOCAL, Placement, Remote
    from emit.http.server import serve
    from emit.http.settings import HttpSettings
    from emit.serverlog import configure

    places: dict[str, Placement] = {}
    if forward is not None:
        space, url = forward.split("=", 1)
        places[space] = Remote(url)

    class Static:
        def route(self, space_id: str) -> Placement:
            return places.get(space_id, LOCAL)

    async def main() -> None:
        configure("warning")
        settings = HttpSettings(rate=1_000_000, cluster_secret=SECRET)
        async with emit.open_runtime(data) as rt, trio.open_nursery() as nursery:
            [url] = await nursery.start(
                lambda task_status: serve(
                    rt, port=0, settings=settings, router=Static(), task_status=task_status
                )
            )
            print(f"serving {url}", flush=True)

    trio.run(main)


async def prepare(data: Path) -> tuple[str, bytes, str]:
    """A space, a reader's key and a job in it, in ``data``: the space id, key, job id."""
    import emit

    async with emit.open_runtime(data) as rt:
        space = await rt.create_space("bench")
        token = await rt.create_token(space.id, name="r", scopes=["jobs:read", "jobs:create"])
        job = await rt.space(space.id).create("read-me", payload={"n": 1})
        return space.id, token.key.encode(), job.id


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="emit-bench-forwarding-") as tmp:
        data = Path(tmp) / "data"
        space, key, job = trio.run(prepare, data)
        a = Node(data)
        b = Node(data, f"{space}={a.url}")
        try:
            samples = trio.run(_measure, a.url, b.url, key, f"/api/v1/jobs/{job}", args)
        finally:
            b.stop()
            a.stop()
    direct, hop = samples
    print(f"GET /api/v1/jobs/<id>, one at a time, {len(direct)} each (ms):")
    print(f"{'':>10} {'p50':>8} {'p99':>8}")
    for name, values in (("A direct", direct), ("B -> A", hop)):
        print(f"{name:>10} {percentile(values, 0.5):8.3f} {percentile(values, 0.99):8.3f}")
    print(
        f"{'the hop':>10} {percentile(hop, 0.5) - percentile(direct, 0.5):8.3f} "
        f"{percentile(hop, 0.99) - percentile(direct, 0.99):8.3f}"
    )


async def _measure(
    url_a: str, url_b: str, key: bytes, path: str, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    direct, hop = Connection(url_a), Connection(url_b)
    for connection in (direct, hop):  # warm: connections, the hop's pool, key caches
        for _ in range(200):
            await connection.call(b"GET", path, key, b"", 200)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(args.windows):
        for connection, into in ((direct, times[0]), (hop, times[1])):
            for _ in range(args.requests // args.windows):
                began = time.perf_counter()
                await connection.call(b"GET", path, key, b"", 200)
                into.append((time.perf_counter() - began) * 1000)
    await direct.aclose()
    await hop.aclose()
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests to each node")
    parser.add_argument("--windows", type=int, default=10, help="turns between the nodes")
    parser.add_argument("--serve-node", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--forward", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve_node is not None:
        serve_node(parsed.serve_node, parsed.forward)
    else:
        measure(parsed)
