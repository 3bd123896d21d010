"""The callback sender: delivers the outbox, retries with backoff, records every try.

One actor with one timer (a heap of when each callback is next due) and a task per
delivery in its own nursery, so a receiver that hangs holds one task and one of its
host's slots, never the space actors or other receivers. Every try is recorded on the
job (``callback_sent`` / ``callback_failed``) by the job's space actor, together with
the outbox row, in one transaction. The outbox is durable: on start, every pending
callback is loaded and resumed.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

import actors

from ..clock import Clock
from ..codec import JSON, dumps
from ..domain.model import EventType
from ..domain.settings import SpaceSettings
from ..errors import EmitError, NotFound
from ..store.base import Store
from ..store.records import Callback
from ..version import __version__
from .policy import CallbackPolicy, refused_address, signature

Record = Callable[[Callback, EventType, JSON], Awaitable[None]]
log = logging.getLogger("emit.callbacks")
MAX_PUSHES = 256
"""Push wakes in flight at most; more are dropped (they are best effort)."""


@dataclass(frozen=True, slots=True)
class CallbacksQueued:
    """New callbacks, durable in the outbox: deliver them."""

    callbacks: list[Callback]


@dataclass(frozen=True, slots=True)
class PushWake:
    """Jobs ``(id, name)`` became pending in a space with a push URL: tell it, once, best
    effort (spec §7's worker wake; no retry, nothing stored)."""

    space_id: str
    settings: SpaceSettings
    jobs: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Rearm:
    """Look at the timer again (a retry was scheduled by a delivery task)."""


class _Refused(Exception):
    pass


class CallbackSender(actors.Actor[CallbacksQueued | PushWake | _Rearm]):
    def __init__(
        self,
        store: Store,
        record: Record,
        clock: Clock,
        policy: CallbackPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.record = record
        self.clock = clock
        self.policy = policy
        self.transport = transport
        self.rng = rng or random.Random()
        self.heap: list[tuple[float, int, Callback]] = []
        self.seq = itertools.count()
        self.hosts: dict[str, trio.Semaphore] = {}
        self.in_flight: set[str] = set()
        self.pushing = 0

    async def started(self) -> None:
        self.client = httpx.AsyncClient(
            transport=self.transport, timeout=self.policy.timeout, follow_redirects=False
        )
        for callback in await self.store.pending_callbacks():
            self._schedule(callback)

    async def stopped(self) -> None:
        await self.client.aclose()

    def _schedule(self, callback: Callback) -> None:
        heapq.heappush(self.heap, (callback.next_at, next(self.seq), callback))

    async def receive(self, message: CallbacksQueued | PushWake | _Rearm) -> object:
        if isinstance(message, CallbacksQueued):
            for callback in message.callbacks:
                self._schedule(callback)
        elif isinstance(message, PushWake):
            for job_id, name in message.jobs:
                if self.pushing >= MAX_PUSHES:
                    # Best effort: a push host that cannot keep up loses wakes rather than
                    # piling up tasks (workers still find the job by polling).
                    log.warning("push wake for job %s dropped: %d in flight", job_id, MAX_PUSHES)
                    continue
                self.pushing += 1
                self.context.nursery.start_soon(
                    self._push, message.space_id, message.settings, job_id, name
                )
        return None

    async def _push(self, space_id: str, settings: SpaceSettings, job_id: str, name: str) -> None:
        url = settings.push_url
        assert url is not None
        body = dumps({"event": "job.pending", "jobId": job_id, "spaceId": space_id, "name": name})
        try:
            await self._post(url, body, settings.push_headers)
        except (_Refused, httpx.HTTPError, OSError) as exc:
            log.warning("push wake to %s failed: %s", url, exc)
        finally:
            self.pushing -= 1

    async def _post(
        self, url: str, body: str, extra: dict[str, str] | None, secret: str | None = None
    ) -> httpx.Response:
        """One POST to a permitted target, in its host's slots, within the timeout."""
        host = urlsplit(url).hostname or ""
        slots = self.hosts.setdefault(host, trio.Semaphore(self.policy.per_host))
        async with slots:
            if not self.policy.allow_private:
                await self._check_target(host)
            # Header names are case-insensitive: the job's (or the push's) headers replace
            # the defaults whatever their case, rather than being sent beside them; the
            # signature is emit's alone, never one the job brought.
            headers = {"content-type": "application/json", "user-agent": f"emit/{__version__}"}
            for name, value in (extra or {}).items():
                if name.lower() != "emit-signature":
                    headers[name.lower()] = value
            if secret:
                headers["emit-signature"] = signature(secret, int(self.clock.now()), body)
            # httpx's own timeouts cover each network step; this covers the whole try,
            # whatever the transport does (a receiver that trickles bytes, a mock).
            with trio.move_on_after(self.policy.timeout):
                return await self.client.post(url, content=body, headers=headers)
            raise httpx.TimeoutException("the whole try")

    def wakeup_at(self) -> float:
        return self.clock.to_trio(self.heap[0][0]) if self.heap else math.inf

    async def wakeup(self) -> None:
        now = self.clock.now()
        while self.heap and self.heap[0][0] <= now:
            _, _, callback = heapq.heappop(self.heap)
            if callback.id in self.in_flight:
                continue
            self.in_flight.add(callback.id)
            self.context.nursery.start_soon(self._deliver, callback)

    async def _deliver(self, callback: Callback) -> None:
        try:
            status, error, permanent = await self._try(callback)
            await self._settle(callback, status, error, permanent)
        finally:
            self.in_flight.discard(callback.id)

    async def _try(self, callback: Callback) -> tuple[int | None, str | None, bool]:
        """One try: (status code, error, whether retrying is pointless)."""
        try:
            space = await self.store.get_space(callback.space_id)
            secret = None if space is None else space.settings.get("signingSecret")
            response = await self._post(
                callback.url,
                callback.body,
                callback.headers,
                secret if isinstance(secret, str) else None,
            )
        except _Refused as exc:
            return None, str(exc), True
        except httpx.TimeoutException:
            return None, f"timed out after {self.policy.timeout:g} s", False
        except (httpx.HTTPError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}".rstrip(": "), False
        if 200 <= response.status_code < 300:
            return response.status_code, None, False
        return response.status_code, f"HTTP {response.status_code}", False

    async def _check_target(self, host: str) -> None:
        try:
            addresses = [str(ipaddress.ip_address(host.strip("[]")))]  # a literal address
        except ValueError:
            try:
                infos = await trio.socket.getaddrinfo(host, None)
            except OSError as exc:
                # Not a refusal: DNS may be back for the next try.
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
            addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            if refused_address(address):
                raise _Refused(
                    f"{host} is a loopback, link-local or private address "
                    "(start the server with --allow-private-callbacks to allow it)"
                )

    async def _settle(
        self, callback: Callback, status: int | None, error: str | None, permanent: bool
    ) -> None:
        now = self.clock.now()
        tries = callback.attempts + 1
        data: dict[str, Any] = {"url": callback.url, "retryAttempt": callback.attempts}
        if error is None:
            kind = EventType.CALLBACK_SENT
            data["statusCode"] = status
            updated = replace(callback, attempts=tries, state="delivered", last_error=None)
        else:
            kind = EventType.CALLBACK_FAILED
            again = not permanent and tries < self.policy.tries
            if status is not None:
                data["statusCode"] = status
            data["error"] = error
            data["willRetry"] = again
            next_at = now + self.policy.delay(tries, self.rng.random()) if again else now
            state = "pending" if again else "failed"
            updated = replace(
                callback, attempts=tries, state=state, next_at=next_at, last_error=error
            )
        try:
            await self.record(updated, kind, data)
        except NotFound:
            return  # the job's space is gone: so is its callback
        except EmitError:
            # Could not be recorded (the space is reloading): try this one again soon,
            # as it stands in the outbox.
            updated = replace(callback, next_at=now + self.policy.first_delay)
            self._schedule(updated)
            self._poke()
            return
        if updated.state == "pending":
            self._schedule(updated)
            self._poke()

    def _poke(self) -> None:
        # The actor waits on its mailbox until the old earliest time: make it look again.
        with contextlib.suppress(actors.ActorError):
            self.context.ref.tell_nowait(_Rearm())
