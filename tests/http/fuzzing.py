"""A real server to fuzz with Schemathesis: real keys, real spaces, real jobs in every
state, served from a thread of its own (Schemathesis calls it with blocking requests),
and the fill-in that turns a generated case into one the server can take seriously.
Shared by tests/http/test_fuzzing.py (bounded, in ``make test``) and bench/fuzz.py (a
longer run by hand)."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import schemathesis
import trio

import emit
from emit.http.openapi import openapi_document
from emit.http.routes import ADMIN, METRICS, PUBLIC, ROUTES
from emit.http.settings import HttpSettings

ADMIN_KEY = "emit_admin_" + "f" * 43
ALL_SCOPES = [
    "jobs:create", "jobs:read", "jobs:poll", "jobs:ack", "jobs:progress", "jobs:event",
    "jobs:complete", "jobs:fail", "jobs:keepalive", "jobs:kill", "jobs:read:progress",
]  # fmt: skip
ACCESS = {(route.method, route.handler.__name__): route.access for route in ROUTES}
CALL_TIMEOUT = 10.0
"""Seconds a request may take before the fuzzer calls it hung (long polls are capped)."""

schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@dataclass
class FuzzTarget:
    url: str
    space: str
    key: str
    """A key of ``space`` with every scope."""
    jobs: list[str]
    """Jobs of ``space``, made in every status."""
    spare_spaces: list[str]
    """Spaces that PATCH and DELETE may change (``space`` stays as it is)."""
    spare_tokens: list[str]
    """Tokens of ``space`` that DELETE may revoke (never ``key``)."""
    _token: trio.lowlevel.TrioToken
    _scope: trio.CancelScope
    calls: int = 0
    slowest: float = 0.0
    errors: list[str] = field(default_factory=list)

    def prepare(self, case: schemathesis.Case[Any]) -> dict[str, str]:
        """Point the case at real things, most of the time (a made-up id now and then
        keeps the 404 paths in play), and say who calls. The headers to send."""
        path = case.path_parameters or {}
        delete = case.method.upper() in ("DELETE", "PATCH")
        for name, value in list(path.items()):
            pick = int(hashlib.sha256(str(value).encode()).hexdigest(), 16)
            if pick % 8 == 0:
                continue  # keep the generated id: not found (or another space's)
            if name == "spaceId":
                spares = self.spare_spaces if delete and "tokens" not in case.path else None
                path[name] = spares[pick % len(spares)] if spares else self.space
            elif name == "jobId":
                path[name] = self.jobs[pick % len(self.jobs)]
            elif name == "tokenId":
                path[name] = self.spare_tokens[pick % len(self.spare_tokens)]
        wait = case.body.get("wait") if isinstance(case.body, dict) else None
        if isinstance(wait, int | float) and isinstance(case.body, dict):
            case.body["wait"] = min(wait, 0.2)  # a long poll is not a hang
        access = ACCESS.get((case.method.upper(), case.operation.definition.raw["operationId"]))
        if access in (ADMIN, METRICS):
            return {"x-api-key": ADMIN_KEY}
        if access == PUBLIC or access is None:
            return {}
        return {"x-api-key": self.key}

    def stop(self) -> None:
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)


async def _make_jobs(jobs: emit.SpaceJobs) -> list[str]:
    """Jobs in every status but scheduled: pending, delivered, running, completed,
    killed and dead."""
    made = [job.id for job in await jobs.create_many([{"name": f"j{n}"} for n in range(10)])]
    dead = await jobs.create("doomed", max_retries=0)
    delivered, running, completed, killed = made[2:6]
    for job_id in (delivered, running, completed, dead.id):
        await jobs.claim(job_id)
    for job_id in (running, completed, dead.id):
        await jobs.ack(job_id)
    await jobs.complete(completed, {"ok": True})
    await jobs.kill(killed, "not needed")
    await jobs.fail(dead.id, "broken")
    return [*made, dead.id]


async def _serve(data: Path, ready: queue.Queue[FuzzTarget | BaseException]) -> None:
    try:
        async with emit.open_runtime(data) as rt:
            space = await rt.create_space("fuzz")
            key = await rt.create_token(space.id, name="all", scopes=ALL_SCOPES)
            spares = [(await rt.create_space(f"spare{n}")).id for n in range(4)]
            tokens = [(await rt.create_token(space.id, name=f"t{n}", preset="worker")).id
                      for n in range(6)]  # fmt: skip
            jobs = await _make_jobs(rt.space(space.id))
            settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(partial(emit.serve, rt, port=0, settings=settings))
                ready.put(
                    FuzzTarget(urls[0], space.id, key.key, jobs, spares, tokens,
                               trio.lowlevel.current_trio_token(), nursery.cancel_scope)
                )  # fmt: skip
                await trio.sleep_forever()
    except BaseException as error:  # the caller waits on the queue: tell it
        ready.put(error)
        raise


@contextmanager
def fuzz_target(data: Path) -> Iterator[FuzzTarget]:
    """A real server on a loopback port over a real SQLite file in ``data``."""
    ready: queue.Queue[FuzzTarget | BaseException] = queue.Queue()
    thread = threading.Thread(target=trio.run, args=(_serve, data, ready), daemon=True)
    thread.start()
    target = ready.get(timeout=60)
    if isinstance(target, BaseException):
        raise target
    try:
        yield target
    finally:
        target.stop()
        thread.join(timeout=30)


def fuzz_schema() -> Any:
    return schemathesis.openapi.from_dict(openapi_document())
