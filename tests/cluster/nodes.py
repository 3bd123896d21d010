"""Real emit nodes for the cluster tests: `emit serve --store postgresql://…` processes
on loopback ports, sharing one database, one admin key and one cluster secret.

    with Cluster(database_url, tmp_path) as cluster:
        a, b, c = cluster.start(3)
        ...
        cluster.kill(b)   # SIGKILL
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

ADMIN_KEY = "emit_admin_" + "k" * 43
SECRET = "cluster-secret-" + "s" * 16
EMIT = [sys.executable, "-m", "emit"]


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )


class Cluster:
    """Starts nodes on one database; stops every one still running on exit."""

    def __init__(self, database_url: str, root: Path, *, lease: float = 2.0) -> None:
        self.database_url = database_url
        self.root = root
        self.lease = lease
        self.nodes: list[Node] = []
        self._count = 0

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait(timeout=30)
            if node.proc.stdout is not None:
                node.proc.stdout.close()

    def start(self, count: int = 1, *extra: str, name: str | None = None) -> list[Node]:
        return [self._start(name, extra) for _ in range(count)]

    def _start(self, name: str | None, extra: tuple[str, ...]) -> Node:
        self._count += 1
        name = name or f"node-{self._count}"
        env = {
            **os.environ,
            "EMIT_ADMIN_KEY": ADMIN_KEY,
            "EMIT_CLUSTER_SECRET": SECRET,
            "EMIT_LOG_LEVEL": os.environ.get("EMIT_TEST_NODE_LOG", "warning"),
        }
        proc = subprocess.Popen(
            [*EMIT, "serve", "--store", self.database_url, "--data", str(self.root / name),
             "--port", "0", "--node-id", name, "--ownership-lease", str(self.lease),
             "--grace", "5", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )  # fmt: skip
        watchdog = threading.Timer(120, proc.kill)
        watchdog.daemon = True
        watchdog.start()
        lines: list[str] = []
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("emit ") and " serving " in line:
                url = line.split()[3]
            if line.startswith("  node "):
                break
        watchdog.cancel()
        if url is None:
            raise RuntimeError(f"{name} did not start:\n" + "\n".join(lines))
        node = Node(name, proc, url, lines)
        # Keep reading its output, so a chatty node never blocks on a full pipe.
        threading.Thread(target=self._drain, args=(node,), daemon=True).start()
        self.nodes.append(node)
        return node

    @staticmethod
    def _drain(node: Node) -> None:
        assert node.proc.stdout is not None
        try:
            for line in node.proc.stdout:
                node.lines.append(line.rstrip("\n"))
        except ValueError:  # closed as the cluster stops
            pass

    def kill(self, node: Node) -> None:
        node.proc.kill()
        node.proc.wait(timeout=30)

    def pause(self, node: Node) -> None:
        node.proc.send_signal(signal.SIGSTOP)

    def resume(self, node: Node) -> None:
        node.proc.send_signal(signal.SIGCONT)

    def stop(self, node: Node) -> int:
        node.proc.send_signal(signal.SIGTERM)
        return node.proc.wait(timeout=60)
