"""A real emit server that a test stops and starts again: the runtime on a SQLite data
directory and the HTTP API on a loopback port, in a task of its own in the test's
nursery. Each start opens the same directory and listens on the same port (Hypercorn
binds with SO_REUSEADDR, so the port is free again as soon as the listener closes, even
with connections in TIME_WAIT), so clients and workers made before a restart find the
server again at the same URL. The first start takes a free port from the kernel; while
the server is down, nothing else in the test binds it (in theory an outgoing connection
could take it as its local port: the kernel picks those from the same range, but it
would have to pick that one port in the moment the server is down).

A stop is either a shutdown, as `emit serve` does on SIGTERM (the listener closes,
WebSockets close with 1001, parked long polls are answered with no jobs, requests in
flight finish, then the runtime stops), or abrupt: everything is cancelled at once, as
close to a crash as a test in one process gets (connections are reset mid-request; the
store keeps what it had acknowledged)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

import emit
from emit.http.server import serve as serve_http
from emit.http.settings import HttpSettings

ADMIN_KEY = "emit_admin_" + "r" * 43


@dataclass
class RestartableServer:
    nursery: trio.Nursery
    """Where the server's task runs: it must outlive every start."""
    data: Path
    settings: HttpSettings = field(
        default_factory=lambda: HttpSettings(
            admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0
        )
    )
    graceful_timeout: float = 5.0
    port: int = 0
    """0 until the first start picks a free one; every later start binds it again."""
    url: str = ""
    space: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    """producer and worker keys of `space`, made on the first start (they persist)."""
    runtime: emit.Runtime | None = None
    """The runtime while the server is up, else None."""
    starts: int = 0
    _scope: trio.CancelScope | None = None
    _shutdown: trio.Event = field(default_factory=trio.Event)
    _stopped: trio.Event = field(default_factory=trio.Event)

    async def start(self) -> None:
        """Start serving; returns once the port is listening and the space is loaded."""
        assert self.runtime is None, "the server is running"
        await self.nursery.start(self._serve)

    async def stop(self, *, abrupt: bool = False) -> None:
        """Stop serving and close the runtime; returns once both are done."""
        rt, scope = self.runtime, self._scope
        assert rt is not None and scope is not None, "the server is not running"
        if abrupt:
            scope.cancel()
        else:
            self._shutdown.set()
            rt.hub.end_all(1001)
            await rt.release_pollers()
        await self._stopped.wait()

    async def restart(self, *, abrupt: bool = False) -> None:
        await self.stop(abrupt=abrupt)
        await self.start()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        self._shutdown, self._stopped = trio.Event(), trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with emit.open_runtime(self.data) as rt:
                    if not self.space:
                        await self._seed(rt)
                    async with trio.open_nursery() as nursery:
                        urls = await nursery.start(
                            partial(
                                serve_http,
                                rt,
                                port=self.port,
                                settings=self.settings,
                                shutdown_trigger=self._shutdown.wait,
                                graceful_timeout=self.graceful_timeout,
                            )
                        )
                        self.url = urls[0]
                        self.port = int(self.url.rsplit(":", 1)[1])
                        self.runtime = rt
                        self.starts += 1
                        task_status.started()
        finally:
            self.runtime = self._scope = None
            self._stopped.set()

    async def _seed(self, rt: emit.Runtime) -> None:
        space = await rt.create_space("restarts")
        producer = await rt.create_token(space.id, name="p", scopes=["jobs:create", "jobs:read"])
        worker = await rt.create_token(space.id, name="w", preset="worker")
        self.space = space.id
        self.keys = {"producer": producer.key, "worker": worker.key}
