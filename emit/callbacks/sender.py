"""The callback sender: delivers the outbox, retries with backoff, records every try.

One actor with one timer (a heap of when each callback is next due) and a task per
delivery in its own nursery, so a receiver that hangs holds one task and one of its
host's slots, never the space actors or other receivers. Every try is recorded on the
job (``callback_sent`` / ``callback_failed``) by the job's space actor, together with
the outbox row, in one transaction. The outbox is durable: on start, every pending
callback is loaded and resumed.

Whatever goes wrong with one delivery is that delivery's failed try, recorded on its
job, never the sender's crash: a crash would leave the row pending, to crash the sender
again on every start. A try that no retry could change (a refused target, a header no
HTTP client can send, a URL with no host) gives the callback up at once.
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
from ..domain.model import EventType, header_problem
from ..domain.records import Callback
from ..domain.settings import SpaceSettings
from ..domain.slack import Notice, slack_message
from ..errors import EmitError, NotFound
from ..metrics import Metrics
from ..store.base import Store
from ..version import __version__
from .policy import CallbackPolicy, refused_address, signature

Record = Callable[[Callback, EventType, JSON], Awaitable[None]]
log = logging.getLogger("emit.callbacks")
MAX_PUSHES = 256
"""Push wakes in flight at most; more are dropped (they are best effort)."""
MAX_SLACK = 1024
"""Slack notices being sent or waiting to retry at most; more are dropped."""
RESCAN_SECONDS = 60.0
"""How often the outbox is read again for callbacks the sender was never told about
(a hint lost to a full mailbox, or after-commit work that failed before it): the outbox
is the truth, the hints only make delivery prompt."""
RECORD_RETRY_MAX = 60.0
"""The longest wait between tries to record a try's outcome that could not be recorded
(its space reloading, the disk full): the try is not made again meanwhile."""


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
class SlackNotices:
    """Job events of a space with a Slack URL became durable: tell Slack, retrying with
    the webhooks' backoff. Kept in memory only: a restart loses the ones not yet sent."""

    space_id: str
    url: str
    notices: list[Notice]


@dataclass(frozen=True, slots=True)
class ScanOutbox:
    """Read the outbox now for callbacks not scheduled yet: this node has just come to
    own a space, whose callbacks its last owner may have left pending."""


@dataclass(frozen=True, slots=True)
class _Rearm:
    """Look at the timer again (a retry was scheduled by a delivery task)."""


def _every_space(space_id: str) -> bool:
    return True


class _Refused(Exception):
    """The target is one this server does not call (a private address)."""


class _Unsendable(Exception):
    """The request cannot be made at all: every try would fail the same way."""


_PERMANENT = (
    httpx.LocalProtocolError,  # our own request breaks HTTP (a framing header)
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
    UnicodeError,  # a host name that IDNA cannot encode
)
"""Errors of a try that no retry can change (besides `_Refused` and `_Unsendable`)."""


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".rstrip(": ")
    # Recorded as JSON text: a lone surrogate from a bad row must not stop the record.
    return text.encode("utf-8", "backslashreplace").decode()


def _host(url: str) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:  # a bad IPv6 literal
        host = None
    if not host:
        raise _Unsendable(f"{url} has no valid host")
    return host


def _headers(extra: object) -> dict[bytes, bytes]:
    """The request's headers: the defaults, then the job's (or the push's) on top.

    Header names are case-insensitive: the job's headers replace the defaults whatever
    their case, rather than being sent beside them; the signature is emit's alone, never
    one the job brought. Values go out as Latin-1 bytes (HTTP's own charset; httpx would
    encode a str as ASCII). Headers were checked when they were set, but a row written
    before that check existed, or by hand, is checked again here."""
    headers = {b"content-type": b"application/json", b"user-agent": f"emit/{__version__}".encode()}
    if extra is None:
        return headers
    if not isinstance(extra, dict):
        raise _Unsendable("its headers cannot be sent: they must be an object of strings")
    for name, value in extra.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise _Unsendable(f"its headers cannot be sent: {problem}")
        if name.lower() != "emit-signature":
            headers[name.lower().encode()] = value.encode("latin-1")
    return headers


class CallbackSender(actors.Actor[CallbacksQueued | PushWake | SlackNotices | ScanOutbox | _Rearm]):
    def __init__(
        self,
        store: Store,
        record: Record,
        clock: Clock,
        policy: CallbackPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.owns = owns or _every_space
        """Whether this node owns a space now: with nodes sharing the store, each sends
        the callbacks of its own spaces alone, so each callback has one sender."""
        self.metrics = metrics or Metrics()
        self.record = record
        self.clock = clock
        self.policy = policy
        self.transport = transport
        self.rng = rng or random.Random()
        self.heap: list[tuple[float, int, Callback]] = []
        self.seq = itertools.count()
        self.hosts: dict[str, trio.Semaphore] = {}
        self.in_flight: set[str] = set()
        self.known: set[str] = set()
        """Ids of the callbacks scheduled or in flight (a rescan adds only the others)."""
        self.rescan_at = math.inf
        self.pushing = 0
        self.slacking = 0

    async def started(self) -> None:
        self.client = httpx.AsyncClient(
            transport=self.transport, timeout=self.policy.timeout, follow_redirects=False
        )
        for callback in await self.store.pending_callbacks():
            if self.owns(callback.space_id):
                self._schedule(callback)
        self.rescan_at = trio.current_time() + RESCAN_SECONDS

    async def stopped(self) -> None:
        await self.client.aclose()

    def _schedule(self, callback: Callback) -> None:
        self.known.add(callback.id)
        heapq.heappush(self.heap, (callback.next_at, next(self.seq), callback))

    async def receive(
        self, message: CallbacksQueued | PushWake | SlackNotices | ScanOutbox | _Rearm
    ) -> object:
        if isinstance(message, ScanOutbox):
            self.context.nursery.start_soon(self._rescan, True)
        elif isinstance(message, CallbacksQueued):
            for callback in message.callbacks:
                if callback.id not in self.known:
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
        elif isinstance(message, SlackNotices):
            for notice in message.notices:
                if self.slacking >= MAX_SLACK:
                    log.warning("Slack notice of job %s dropped: %d in flight",
                                notice.job_id, MAX_SLACK)  # fmt: skip
                    continue
                self.slacking += 1
                self.context.nursery.start_soon(
                    self._notify_slack, message.space_id, message.url, notice
                )
        return None

    async def _notify_slack(self, space_id: str, url: str, notice: Notice) -> None:
        """Tell Slack of one job event: the tries and backoff of a job's callback, a
        task that waits out its backoff (they are few: Slack is for people to read)."""
        try:
            space = await self.store.get_space(space_id)
            if space is None:
                return  # deleted meanwhile
            body = dumps(slack_message(space.name, notice))
            for tries in itertools.count(1):
                error, permanent = await self._try_slack(url, body, notice.job_id)
                if error is None:
                    return
                if permanent or tries >= self.policy.tries:
                    log.warning("Slack notice of job %s (%s) to %s given up after %d tries: %s",
                                notice.job_id, notice.event, url, tries, error)  # fmt: skip
                    return
                await trio.sleep(self.policy.delay(tries, self.rng.random()))
        except Exception:  # one notice's failure is its alone, never the sender's crash
            log.exception("Slack notice of job %s failed", notice.job_id)
        finally:
            self.slacking -= 1

    async def _try_slack(self, url: str, body: str, job_id: str) -> tuple[str | None, bool]:
        """One try: (the error, or None once delivered; whether retrying is pointless)."""
        try:
            response = await self._post(url, body, None, job_id=job_id)
        except (_Refused, _Unsendable) as exc:
            return str(exc), True
        except httpx.TimeoutException:
            return f"timed out after {self.policy.timeout:g} s", False
        except _PERMANENT as exc:
            return _describe(exc), True
        except (httpx.HTTPError, OSError) as exc:
            return _describe(exc), False
        if 200 <= response.status_code < 300:
            return None, False
        return f"HTTP {response.status_code}", False

    async def _push(self, space_id: str, settings: SpaceSettings, job_id: str, name: str) -> None:
        url = settings.push_url
        assert url is not None
        body = dumps({"event": "job.pending", "jobId": job_id, "spaceId": space_id, "name": name})
        try:
            await self._post(url, body, settings.push_headers, job_id=job_id)
        except Exception as exc:  # best effort: any failure is this wake's alone
            log.warning("push wake for job %s to %s failed: %s", job_id, url, _describe(exc))
        finally:
            self.pushing -= 1

    async def _post(
        self,
        url: str,
        body: str,
        extra: dict[str, str] | None,
        secret: str | None = None,
        *,
        job_id: str,
    ) -> httpx.Response:
        """One POST to a permitted target, in its host's slots, within the timeout."""
        host = _host(url)
        headers = _headers(extra)
        slots = self.hosts.setdefault(host, trio.Semaphore(self.policy.per_host))
        async with slots:
            if not self.policy.allow_private:
                await self._check_target(host, job_id)
            if secret:
                headers[b"emit-signature"] = signature(secret, int(self.clock.now()), body).encode()
            # httpx's own timeouts cover each network step; this covers the whole try,
            # whatever the transport does (a receiver that trickles bytes, a mock).
            with trio.move_on_after(self.policy.timeout):
                return await self.client.post(url, content=body, headers=headers)
            raise httpx.TimeoutException("the whole try")

    def wakeup_at(self) -> float:
        due = self.clock.to_trio(self.heap[0][0]) if self.heap else math.inf
        return min(due, self.rescan_at)

    async def wakeup(self) -> None:
        if trio.current_time() >= self.rescan_at:
            self.rescan_at = trio.current_time() + RESCAN_SECONDS
            self.context.nursery.start_soon(self._rescan)
        now = self.clock.now()
        while self.heap and self.heap[0][0] <= now:
            _, _, callback = heapq.heappop(self.heap)
            if callback.id in self.in_flight:
                continue
            if not self.owns(callback.space_id):
                self.known.discard(callback.id)  # its space moved: its new owner sends it
                continue
            self.in_flight.add(callback.id)
            self.context.nursery.start_soon(self._deliver, callback)

    async def _rescan(self, gained: bool = False) -> None:
        """Schedule what the outbox holds and the sender was never told of (or, after
        this node ``gained`` a space, what its last owner left)."""
        try:
            pending = await self.store.pending_callbacks()
        except Exception:  # the store is failing: the next rescan tries again
            log.exception("the outbox could not be read")
            return
        found = [
            callback
            for callback in pending
            if callback.id not in self.known and self.owns(callback.space_id)
        ]
        if found:
            if not gained:
                log.warning("%d callbacks found in the outbox untold: scheduled now", len(found))
            for callback in found:
                self._schedule(callback)
            self._poke()

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
                job_id=callback.job_id,
            )
        except (_Refused, _Unsendable) as exc:
            return None, str(exc), True
        except httpx.TimeoutException:
            return None, f"timed out after {self.policy.timeout:g} s", False
        except _PERMANENT as exc:
            return None, _describe(exc), True
        except (httpx.HTTPError, OSError) as exc:
            return None, _describe(exc), False
        except Exception as exc:
            # Any other fault is this try's alone (a store that did not answer, a bug):
            # a failed try like any other, retried, never the sender's crash.
            log.exception("callback %s for job %s: the try failed", callback.id, callback.job_id)
            return None, _describe(exc), False
        if 200 <= response.status_code < 300:
            return response.status_code, None, False
        return response.status_code, f"HTTP {response.status_code}", False

    async def _check_target(self, host: str, job_id: str) -> None:
        try:
            addresses = [str(ipaddress.ip_address(host))]  # a literal address
        except ValueError:
            try:
                infos = await trio.socket.getaddrinfo(host, None)
            except OSError as exc:
                # Not a refusal: DNS may be back for the next try.
                raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
            addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            if refused_address(address):
                # A literal private address is refused when the job or setting is made;
                # one that gets here came from a name, or from before that check.
                log.warning(
                    "job %s: not calling %s, which resolves to the loopback, link-local or "
                    "private address %s (start the server with --allow-private-callbacks "
                    "to allow it)",
                    job_id,
                    host,
                    address,
                )
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
            outcome = "delivered"
            data["statusCode"] = status
            updated = replace(callback, attempts=tries, state="delivered", last_error=None)
        else:
            kind = EventType.CALLBACK_FAILED
            again = not permanent and tries < self.policy.tries
            outcome = "retrying" if again else "given_up"
            if status is not None:
                data["statusCode"] = status
            data["error"] = error
            data["willRetry"] = again
            next_at = now + self.policy.delay(tries, self.rng.random()) if again else now
            state = "pending" if again else "failed"
            updated = replace(
                callback, attempts=tries, state=state, next_at=next_at, last_error=error
            )
        self.metrics.callback(outcome)
        failures = 0
        while True:
            try:
                await self.record(updated, kind, data)
                break
            except NotFound:
                self.known.discard(callback.id)
                return  # the job's space is gone: so is its callback
            except Exception as exc:
                if not self.owns(callback.space_id):
                    # Its space moved to another node before this try was recorded: the
                    # new owner finds the callback pending and sends it (at least once).
                    self.known.discard(callback.id)
                    return
                # Not recorded (the space reloading, the disk full): record this outcome
                # again, with backoff, rather than make the try again (a receiver that
                # said 200 would get the same webhook every second).
                if not isinstance(exc, EmitError):
                    log.exception("callback %s for job %s: the try was not recorded",
                                  callback.id, callback.job_id)  # fmt: skip
                failures += 1
                await trio.sleep(
                    min(RECORD_RETRY_MAX, max(0.1, self.policy.first_delay) * 2**failures)
                )
        if updated.state == "pending":
            self._schedule(updated)
            self._poke()
        else:
            self.known.discard(callback.id)
            if updated.state == "failed":
                log.warning(
                    "callback %s for job %s to %s given up after %d %s: %s",
                    callback.id,
                    callback.job_id,
                    callback.url,
                    tries,
                    "try" if tries == 1 else "tries",
                    error,
                )

    def _poke(self) -> None:
        # The actor waits on its mailbox until the old earliest time: make it look again.
        with contextlib.suppress(actors.ActorError):
            self.context.ref.tell_nowait(_Rearm())
