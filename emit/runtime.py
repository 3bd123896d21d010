"""The embedding API: run all of emit inside a Trio program, no HTTP needed.

    async with emit.open_runtime("emit-data") as rt:   # None: an in-memory store
        space = await rt.create_space("email-jobs")
        jobs = rt.space(space.id)
        job = await jobs.create("send-email", payload={"to": "a@b.c"})

The runtime is an actor system: the store writer first, then a supervisor with one
actor per space (rest-for-one: if the writer fails, the spaces restart from the store).
The HTTP layer calls the same methods. Keyword names are the snake_case of the wire's.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import httpx
import trio

import actors

from .callbacks.policy import CallbackPolicy
from .callbacks.sender import (
    CallbackSender,
    CallbacksQueued,
    PushWake,
    ScanOutbox,
    SlackNotices,
)
from .clock import Clock
from .codec import JSON, JSONInput, loads
from .domain.commands import (
    AckJob,
    AppendLogs,
    ApplySettings,
    ClaimJob,
    Command,
    CompleteItem,
    CompleteJobs,
    CountJobs,
    CountPollers,
    CreateJobs,
    FailItem,
    FailJobs,
    GiveBack,
    KeepAlive,
    KillJob,
    LogEntry,
    PollJobs,
    RecordCallback,
    RecordEvent,
    ReleasePollers,
    ReportProgress,
    RetryJob,
    SaveCheckpoint,
    StreamSnapshot,
)
from .domain.job import Job
from .domain.model import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    DEFAULT_TIMEOUT_SECONDS,
    EventType,
    JobStatus,
    LogLevel,
    PollRequest,
    encode_json,
    unicode_text,
    validate_log_level,
    validate_new_job,
    validate_poll,
    validate_progress,
)
from .domain.records import Callback, LogLine, Space, Token
from .domain.settings import Retention, SpaceSettings, validate_settings
from .domain.slack import Notice
from .domain.views import Delivery, JobView
from .errors import MOVING_RETRY_AFTER, EmitError, InvalidRequest, NotFound, Unavailable
from .ids import hash_key
from .isotime import iso, parse_iso
from .metrics import Metrics
from .realtime.hub import EventHub, Key, SpaceMessage, Subscription
from .registry import NewToken, check_name, make_space, make_token
from .space.actor import SpaceActor
from .store.base import Store, is_postgres_url
from .store.memory import MemoryStore
from .store.records import Changes
from .store.sqlite import SQLiteStore
from .store.writer import Commit, StoreWriter
from .sweeper import SWEEP_EVERY, Sweeper, Swept, sweep_spaces
from .throughput import Minute, Throughput

log = logging.getLogger("emit.runtime")

ASK_TIMEOUT = 30.0
"""How long a caller waits on a space or the writer before `Unavailable` (on top of a
long poll's own wait)."""
MAX_BATCH = 1000
KEY_USES_EVERY = 60.0
"""Seconds between writes of when keys were last used (`Runtime.flush_key_uses`): a
crash loses at most this much of them; a stop writes them all."""
NO_ANSWER = (
    "did not answer in time: the change may or may not have been made"
    " (retry with an idempotency key, or read it back)"
)
"""What a caller who gave up waiting is told: like a commit whose outcome is unknown."""


def _optional_text(value: object, field: str) -> None:
    """None, or a str of Unicode text (`unicode_text`); else `InvalidRequest`."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string", field=field)
    unicode_text(value, field)


R = TypeVar("R")


def _ulid_or_404(job_id: str) -> str:
    if not isinstance(job_id, str) or len(job_id) != 26:
        raise NotFound(f"no job {job_id!r}")
    return job_id


class SpaceStream(NamedTuple):
    """A space stream as it starts (`SpaceJobs.stream`)."""

    subscription: Subscription
    seq: int
    """The stream's seq now."""
    missed: bool
    """The client asked for a replay the buffer can no longer give."""
    replay: list[SpaceMessage]
    """The messages to send first, on a replay."""
    instance_id: str
    """Which start of the runtime the seqs count in."""


class SpaceJobs:
    """The jobs of one space. Cheap to make; it looks the space actor up on each call,
    so it keeps working across restarts of the space."""

    def __init__(self, runtime: Runtime, space_id: str) -> None:
        self._runtime = runtime
        self.space_id = space_id

    async def _ask(self, message: Command[R], wait: float = 0) -> R:
        ref = await self._runtime._space_ref(self.space_id)
        try:
            answer: R = await ref.ask(message, timeout=ASK_TIMEOUT + wait)
        except actors.AskTimeout:
            # The message may still be handled and its change committed after we stop
            # waiting: say so, or a caller retrying a create makes a duplicate.
            raise Unavailable(f"space {self.space_id} {NO_ANSWER}") from None
        except (actors.ActorStopped, actors.ActorCrashed):
            raise Unavailable(f"space {self.space_id} is restarting; retry") from None
        return answer

    # ------------------------------------------------------------------- producers

    async def create(
        self,
        name: str,
        payload: JSONInput = None,
        *,
        priority: int = DEFAULT_PRIORITY,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
        scheduled_for: str | None = None,
        callback_url: str | None = None,
        callback_headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry_backoff: Mapping[str, float] | None = None,
    ) -> JobView:
        """Create one job (or return the one its idempotency key already made)."""
        wire: dict[str, Any] = {
            "name": name,
            "payload": payload,
            "priority": priority,
            "maxRetries": max_retries,
            "timeoutSeconds": timeout_seconds,
            "scheduledFor": scheduled_for,
            "callbackUrl": callback_url,
            "callbackHeaders": callback_headers,
            "idempotencyKey": idempotency_key,
            "retryBackoff": retry_backoff,
        }
        [(job, _)] = await self.submit([wire], batch=False)
        return job

    async def create_many(self, items: Sequence[Mapping[str, Any]]) -> list[JobView]:
        """Create a batch from wire-form objects, all or nothing."""
        return [job for job, _ in await self.submit(items)]

    async def submit(
        self, items: Sequence[Mapping[str, Any]], *, batch: bool = True
    ) -> list[tuple[JobView, bool]]:
        """Create from wire-form objects; each job with False where an idempotency key
        returned an existing job. A bad item refuses the whole batch, naming its index."""
        if batch and not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH} jobs", field="jobs")
        now = self._runtime.clock.now()
        private = self._runtime.callback_policy.allow_private
        validated = []
        for index, item in enumerate(items):
            try:
                if type(item) is not dict and not isinstance(item, Mapping):  # dicts: no ABC check
                    raise InvalidRequest("each job must be an object")
                validated.append(validate_new_job(item, now=now, allow_private_callbacks=private))
            except InvalidRequest as exc:
                if not batch:
                    raise
                raise InvalidRequest(f"jobs[{index}]: {exc.message}", field=exc.field) from None
        return await self._ask(CreateJobs(validated, batch))

    # --------------------------------------------------------------------- workers

    async def poll(
        self,
        count: int = 1,
        *,
        names: str | Sequence[str] | None = None,
        wait: float = 0,
        ack: bool = False,
    ) -> list[Delivery]:
        """Take up to ``count`` ready jobs (of ``names``, if given); with ``wait``, park
        until at least one is ready or ``wait`` seconds pass."""
        raw: dict[str, Any] = {"count": count, "wait": wait, "ack": ack}
        if names is not None:
            raw["names"] = names if isinstance(names, str) else list(names)
        return await self.poll_request(validate_poll(raw))

    async def poll_request(self, request: PollRequest) -> list[Delivery]:
        if self._runtime.draining and request.wait:
            request = dataclasses.replace(request, wait=0)  # shutting down: park none
        return await self._ask(PollJobs(request), wait=request.wait)

    async def claim(self, job_id: str) -> Delivery:
        return await self._ask(ClaimJob(_ulid_or_404(job_id)))

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """These deliveries never reached whoever asked for them (it hung up before the
        answer went out): their jobs go back to pending without spending an attempt.
        Without waiting, so a cancelled caller can still call it; should the space not
        take the message now, the leases expire as usual instead."""
        ref = self._runtime.spaces.whereis(self.space_id)
        if deliveries and isinstance(ref, actors.ActorRef):
            with contextlib.suppress(actors.ActorError):
                ref.tell_nowait(GiveBack([(d.id, d.lease_id) for d in deliveries]))

    async def ack(self, job_id: str, *, lease_id: str | None = None) -> JobView:
        return await self._ask(AckJob(_ulid_or_404(job_id), lease_id))

    async def progress(
        self,
        job_id: str,
        percent: float,
        message: str,
        *,
        sub_progress: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> JobView:
        update = validate_progress(percent, message, sub_progress)
        return await self._ask(ReportProgress(_ulid_or_404(job_id), update, lease_id))

    async def checkpoint(
        self, job_id: str, state: Mapping[str, Any], *, lease_id: str | None = None
    ) -> JobView:
        if not isinstance(state, Mapping):
            raise InvalidRequest("a checkpoint must be a JSON object", field="checkpoint")
        data = dict(state)
        encoded = encode_json(data, "checkpoint")
        message = SaveCheckpoint(_ulid_or_404(job_id), encoded, data, lease_id)
        return await self._ask(message)

    async def event(
        self, job_id: str, type: str, data: JSONInput = None, *, lease_id: str | None = None
    ) -> JobView:
        if not isinstance(type, str) or not 1 <= len(type) <= 200:
            raise InvalidRequest("type must be a string of 1 to 200 characters", field="type")
        unicode_text(type, "type")
        # A plain copy: the event keeps the caller's value, which the caller may change.
        plain: JSON = loads(encode_json(data, "data"))
        return await self._ask(RecordEvent(_ulid_or_404(job_id), type, plain, lease_id))

    async def log(
        self,
        job_id: str,
        level: str,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> int:
        line = {"level": level, "message": message, "fields": fields}
        return await self.log_lines(job_id, [line], lease_id=lease_id)

    async def log_lines(
        self, job_id: str, lines: Sequence[Mapping[str, Any]], *, lease_id: str | None = None
    ) -> int:
        entries = []
        for index, line in enumerate(lines):
            where = f"lines[{index}]"
            if not isinstance(line, Mapping):
                raise InvalidRequest(f"{where} must be an object", field=where)
            level = validate_log_level(line.get("level"), f"{where}.level")
            message = line.get("message")
            if not isinstance(message, str):
                raise InvalidRequest(f"{where}.message must be a string", field=where)
            unicode_text(message, f"{where}.message")
            ts = line.get("ts")
            stamp: float | None = None
            if ts is not None:
                try:
                    if not isinstance(ts, str):
                        raise ValueError
                    stamp = parse_iso(ts)
                except ValueError:
                    raise InvalidRequest(
                        f"{where}.ts must be an ISO 8601 time", field=where
                    ) from None
            fields = line.get("fields")
            if fields is not None and not isinstance(fields, Mapping):
                raise InvalidRequest(f"{where}.fields must be an object", field=where)
            encode_json(fields, f"{where}.fields")
            entries.append(
                LogEntry(level, message, stamp, None if fields is None else dict(fields))
            )
        return await self._ask(AppendLogs(_ulid_or_404(job_id), entries, lease_id))

    async def keepalive(
        self, job_id: str, *, seconds: int | None = None, lease_id: str | None = None
    ) -> JobView:
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 86400
        ):
            raise InvalidRequest("seconds must be an integer from 1 to 86400", field="seconds")
        return await self._ask(KeepAlive(_ulid_or_404(job_id), seconds, lease_id))

    async def complete(
        self, job_id: str, result: JSONInput = None, *, lease_id: str | None = None
    ) -> JobView:
        [outcome] = await self.complete_many(
            [{"id": job_id, "result": result, "leaseId": lease_id}]
        )
        if isinstance(outcome, EmitError):
            raise outcome
        return outcome

    async def complete_many(self, items: Sequence[Mapping[str, Any]]) -> list[JobView | EmitError]:
        """Complete each ``{id, result, leaseId?}``; each item stands alone."""
        parsed = []
        for index, item in enumerate(self._batch(items)):
            job_id, lease_id = self._item_id(item, index)
            result = item.get("result")
            parsed.append(
                CompleteItem(job_id, encode_json(result, f"jobs[{index}].result"), result, lease_id)
            )
        return await self._ask(CompleteJobs(parsed))

    async def fail(self, job_id: str, error: str, *, lease_id: str | None = None) -> JobView:
        [outcome] = await self.fail_many([{"id": job_id, "error": error, "leaseId": lease_id}])
        if isinstance(outcome, EmitError):
            raise outcome
        return outcome

    async def fail_many(self, items: Sequence[Mapping[str, Any]]) -> list[JobView | EmitError]:
        """Fail each ``{id, error, leaseId?}``; each item stands alone."""
        parsed = []
        for index, item in enumerate(self._batch(items)):
            job_id, lease_id = self._item_id(item, index)
            error = item.get("error")
            if not isinstance(error, str):
                raise InvalidRequest(f"jobs[{index}].error is required: a string", field="error")
            unicode_text(error, "error")
            parsed.append(FailItem(job_id, error, lease_id))
        return await self._ask(FailJobs(parsed))

    @staticmethod
    def _batch(items: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
        if not isinstance(items, Sequence) or not 1 <= len(items) <= 500:
            raise InvalidRequest("jobs must be a list of 1 to 500 items", field="jobs")
        for index, item in enumerate(items):
            if type(item) is not dict and not isinstance(item, Mapping):  # dicts: no ABC check
                raise InvalidRequest(f"jobs[{index}] must be an object", field="jobs")
        return items

    @staticmethod
    def _item_id(item: Mapping[str, Any], index: int) -> tuple[str, str | None]:
        job_id = item.get("id")
        lease_id = item.get("leaseId")
        if not isinstance(job_id, str):
            raise InvalidRequest(f"jobs[{index}].id is required: a string", field="id")
        if lease_id is not None and not isinstance(lease_id, str):
            raise InvalidRequest(f"jobs[{index}].leaseId must be a string", field="leaseId")
        return job_id, lease_id

    async def kill(self, job_id: str, reason: str | None = None) -> JobView:
        _optional_text(reason, "reason")
        return await self._ask(KillJob(_ulid_or_404(job_id), reason))

    async def retry(self, job_id: str) -> JobView:
        """A dead or killed job back to pending, with its attempts reset."""
        return await self._ask(RetryJob(_ulid_or_404(job_id)))

    # --------------------------------------------------------------------- queries

    def _ours(self, job: Job | None, job_id: str) -> Job:
        """``job``, if it is in this space; else 404."""
        if job is None or job.space_id != self.space_id:
            raise NotFound(f"no job {job_id} in this space")
        return job

    async def job(self, job_id: str) -> Job:
        """The job as last committed, as the domain holds it (no events, nothing
        redacted: not for the wire); 404 unless it is in this space."""
        return self._ours(await self._runtime.store.get_job(_ulid_or_404(job_id)), job_id)

    async def get(self, job_id: str) -> JobView:
        """The job as last committed, with its events (as of the same commit)."""
        found = await self._runtime.store.get_job_with_events(_ulid_or_404(job_id))
        if found is None:
            raise NotFound(f"no job {job_id} in this space")
        job, events = found
        return JobView.of(self._ours(job, job_id), events)

    async def counts(self) -> dict[JobStatus, int]:
        return await self._ask(CountJobs())

    async def settled(self) -> None:
        """Return once every change this space recorded before the call is durable: the
        space answers a question only after the writes in flight before it."""
        await self._ask(CountJobs())

    async def stream_snapshot(self) -> tuple[dict[JobStatus, int], int]:
        """The counts as of the last commit and the space stream's seq at that commit:
        a stream that starts from them and applies the messages after that seq counts
        every change once."""
        return await self._ask(StreamSnapshot())

    async def pollers(self) -> int:
        """How many long polls are parked in this space now."""
        return await self._ask(CountPollers())

    # --------------------------------------------------------------------- streams

    @contextlib.contextmanager
    def stream(
        self, since: int | None, instance: str | None, key: Key | None = None
    ) -> Iterator[SpaceStream]:
        """Subscribe to the space's stream of events for the block (`EventHub.subscribe_space`:
        ``since`` and ``instance`` ask for a replay of what a client missed)."""
        hub = self._runtime.hub
        subscription, seq, missed, replay = hub.subscribe_space(
            self.space_id, True, since, instance, key
        )
        try:
            yield SpaceStream(subscription, seq, missed, replay, hub.instance_id)
        finally:
            hub.unsubscribe(subscription)

    @contextlib.contextmanager
    def job_stream(self, job_id: str, full: bool, key: Key | None = None) -> Iterator[Subscription]:
        """Subscribe to one job's events for the block; not ``full``: without ``data``
        (a progress-only key)."""
        hub = self._runtime.hub
        subscription = hub.subscribe_job(self.space_id, job_id, full, key)
        try:
            yield subscription
        finally:
            hub.unsubscribe(subscription)

    async def logs(
        self,
        job_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        level: str | None = None,
        q: str | None = None,
    ) -> list[LogLine]:
        await self.job(job_id)  # 404 unless the job is in this space
        minimum: LogLevel | None = None if level is None else validate_log_level(level)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be an integer from 1 to 1000", field="limit")
        _optional_text(q, "q")
        return await self._runtime.store.get_logs(
            job_id, after=after, limit=limit, level=minimum, q=q
        )

    # Last in the class: below this line `list` would name the method, not the type.
    async def list(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[JobView], int]:
        """A page of jobs, newest first, and how many match in all."""
        state = None
        if status is not None:
            try:
                state = JobStatus(status)
            except ValueError:
                raise InvalidRequest(f"unknown status {status!r}", field="status") from None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
            raise InvalidRequest("limit must be an integer from 1 to 100", field="limit")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidRequest("offset must be an integer >= 0", field="offset")
        _optional_text(name, "name")
        await self._runtime._space_ref(self.space_id)  # 404 for an unknown space
        jobs, total = await self._runtime.store.list_jobs(
            self.space_id, status=state, name=name, limit=limit, offset=offset
        )
        return [JobView.of(job) for job in jobs], total


@dataclasses.dataclass(frozen=True, slots=True)
class StopMoved:
    """A space this node wrote at ``epoch`` moved to another node: stop it for good,
    unless this node holds it again meanwhile (then `Runtime.gained` replaced it)."""

    space_id: str
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class StartOwned:
    """This node now owns the space: load it (`Runtime.gained` does not wait for that)."""

    space_id: str


class SpaceStarter(actors.Actor[StopMoved | StartOwned]):
    """Starts every space of the store (with nodes sharing it, every space this node
    owns) each time it starts. It is started after the spaces supervisor at the root
    (rest-for-one), so whatever restarts the spaces supervisor (a crash of the store
    writer, or of the supervisor itself), which comes back with no spaces, restarts it
    too: every space then runs again, with its timers, without waiting for a request to
    name it. With nodes sharing the store, it also loads the spaces this node comes to
    own (`StartOwned`), and stops those that find they moved (`StopMoved`): a space
    cannot stop itself for good."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def started(self) -> None:
        # The first start is the runtime's own: a space that cannot load fails it. After
        # a restart, one broken space must not keep the others down.
        await self.runtime.start_spaces(strict=self.context.incarnation == 0)

    async def receive(self, message: StopMoved | StartOwned) -> None:
        owned = self.runtime.owned
        if isinstance(message, StartOwned):
            if owned is not None and message.space_id in owned:
                try:
                    await self.runtime._space_ref(message.space_id)
                except EmitError as exc:  # a request, or the next gain, tries again
                    log.warning("space %s did not load: %s", message.space_id, exc)
        elif owned is not None and message.space_id not in owned:
            await self.runtime.stop_space(message.space_id)


class KeyUseFlusher(actors.Actor[None]):
    """Writes the keys' last uses every ``every`` seconds, and once more as it stops
    (before the store writer, started before it, stops). Handles no messages."""

    def __init__(self, runtime: Runtime, every: float) -> None:
        self.runtime = runtime
        self.every = every
        self.next_at = trio.current_time() + every

    def wakeup_at(self) -> float:
        return self.next_at

    async def wakeup(self) -> None:
        self.next_at = trio.current_time() + self.every
        try:
            await self.runtime.flush_key_uses()
        except EmitError as exc:  # kept for the next try
            log.warning("the keys' last uses were not written this time: %s", exc)

    async def stopped(self) -> None:
        with contextlib.suppress(EmitError):
            await self.runtime.flush_key_uses()

    async def receive(self, message: None) -> None:
        return None


class Runtime:
    """A running emit: spaces, tokens, and a `SpaceJobs` per space."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        system: actors.ActorSystem,
        writer: actors.ActorRef[Any],
        spaces: actors.SupervisorRef,
        callback_policy: CallbackPolicy,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.system = system
        self.writer = writer
        self.spaces = spaces
        self.callback_policy = callback_policy
        """How webhooks and push wakes are sent, and where they may go: creates and
        settings refuse a target every try would refuse."""
        self.hub = EventHub()
        """Live event fan-out to WebSocket streams (emit.realtime)."""
        self.metrics = metrics or Metrics()
        """What the engine and the edge count (emit.metrics): `metrics_text` renders it."""
        self.metrics.hub = self.hub
        self.callbacks: actors.ActorRef[Any] | None = None
        """The webhook sender, once started."""
        self.deleting: set[str] = set()
        """Spaces being deleted: no request may start their actor again meanwhile."""
        self.draining = False
        """Shutting down (`release_pollers` was called): long polls are answered at once."""
        self.retention = Retention()
        """How long finished jobs are kept in a space without a ``retention`` setting
        (and for the statuses its setting leaves out)."""
        self.key_uses: dict[str, float] = {}
        """Keys used since the last flush: token id → when last (`note_key_use`)."""
        self.owned: dict[str, int] | None = None
        """With nodes sharing the store (``open_runtime(shared=True)``): the spaces this
        node owns, each with the epoch it holds it at (`gained`, `lost`); it runs those
        alone, and the store refuses its writes to any other. None: this node owns every
        space."""
        self.starter: actors.ActorRef[StopMoved | StartOwned] | None = None
        self.space_created: Callable[[str], Awaitable[None]] | None = None
        """With nodes sharing the store: told of each space made here, so the cluster
        places it at once (`emit.cluster.node.joined`)."""

    def _notify_callbacks(self, callbacks: list[Callback]) -> None:
        # A hint: the outbox is durable, and the sender loads it on every start.
        if self.callbacks is not None:
            with contextlib.suppress(actors.ActorError):
                self.callbacks.tell_nowait(CallbacksQueued(callbacks))

    def _wake(self, space_id: str, settings: SpaceSettings, jobs: list[tuple[str, str]]) -> None:
        if self.callbacks is not None and settings.push_url is not None:
            with contextlib.suppress(actors.ActorError):
                self.callbacks.tell_nowait(PushWake(space_id, settings, jobs))

    def _notify_slack(self, space_id: str, settings: SpaceSettings, notices: list[Notice]) -> None:
        # Best effort past the sender's retries: the notices are not stored.
        if self.callbacks is not None and settings.slack_url is not None:
            with contextlib.suppress(actors.ActorError):
                self.callbacks.tell_nowait(SlackNotices(space_id, settings.slack_url, notices))

    async def _record_callback(self, callback: Callback, kind: EventType, data: JSON) -> None:
        await self.space(callback.space_id)._ask(
            RecordCallback(callback.job_id, kind, data, callback)
        )

    def space(self, space_id: str) -> SpaceJobs:
        return SpaceJobs(self, space_id)

    async def _commit(self, changes: Changes) -> None:
        try:
            await self.writer.ask(Commit(changes), timeout=ASK_TIMEOUT)
        except actors.AskTimeout:
            raise Unavailable(f"the store {NO_ANSWER}") from None
        except actors.ActorError as exc:
            raise Unavailable(f"the store is not taking writes: {exc}") from None

    def _epoch(self, space_id: str) -> int | None:
        """The epoch at which this node owns the space (None: it owns every space);
        `Unavailable`, with when to retry, if another node does or none yet."""
        if self.owned is None:
            return None
        epoch = self.owned.get(space_id)
        if epoch is None:
            raise _not_here(space_id)
        return epoch

    def _moved(self, space_id: str, epoch: int) -> None:
        """A space found its writes refused: another node holds it now."""
        if self.owned is not None and self.owned.get(space_id) == epoch:
            del self.owned[space_id]
        if self.starter is not None:
            with contextlib.suppress(actors.ActorError):
                self.starter.tell_nowait(StopMoved(space_id, epoch))

    def owns(self, space_id: str) -> bool:
        """Whether this node owns the space now (always, alone on its store)."""
        return self.owned is None or space_id in self.owned

    async def gained(self, space_id: str, epoch: int) -> None:
        """This node now owns the space at ``epoch`` (the cluster's membership claimed
        it): start it afresh from the store (soon, without waiting for its load), with
        that epoch on every write, and send the callbacks its last owner left pending."""
        if self.owned is None:
            raise RuntimeError("gained() is for a runtime opened with shared=True")
        await self.stop_space(space_id)  # an incarnation of an earlier epoch, if any
        self.owned[space_id] = epoch
        if self.callbacks is not None:
            with contextlib.suppress(actors.ActorError):
                self.callbacks.tell_nowait(ScanOutbox())
        # Loaded by the starter, not here: the membership's tick must not wait on a big
        # space's load (a request meanwhile loads it as well, once).
        if self.starter is not None:
            with contextlib.suppress(actors.ActorError):
                self.starter.tell_nowait(StartOwned(space_id))

    async def lost(self, space_id: str) -> None:
        """This node no longer owns the space (its lease lapsed or it handed it over):
        stop it at once. Writes in flight settle; parked long polls get an empty answer;
        everything else is refused with when to retry."""
        if self.owned is None:
            raise RuntimeError("lost() is for a runtime opened with shared=True")
        self.owned.pop(space_id, None)
        await self.stop_space(space_id)

    async def stop_space(self, space_id: str) -> None:
        """Stop the space's actor for good, if it runs (a later request may start it
        again, where this node owns it)."""
        ref = self.spaces.whereis(space_id)
        if ref is None:
            return
        if isinstance(ref, actors.ActorRef):
            # An incarnation that is ending (a write failed) refuses it: it has no
            # parked polls to release then, and stops all the same.
            with contextlib.suppress(actors.ActorError, EmitError):
                await ref.ask(ReleasePollers(), timeout=ASK_TIMEOUT)
        with contextlib.suppress(actors.ChildNotFound):
            await self.spaces.stop_child(space_id)

    def _spec(self, space_id: str) -> actors.ActorSpec[Any]:
        return actors.ActorSpec(
            space_id,
            lambda: SpaceActor(
                space_id,
                self.store,
                self.writer,
                self.clock,
                self.hub,
                self._notify_callbacks,
                self._wake,
                self.metrics,
                notify_slack=self._notify_slack,
                epoch=self._epoch(space_id),
                moved=self._moved,
            ),
            capacity=4096,
            # Requests still queued when a space stops for good are refused untouched
            # ("restarting; retry" is then true); those it took are settled as it ends.
            on_stop=actors.StopPolicy.REJECT,
            shutdown=30.0,
        )

    async def _space_ref(self, space_id: str) -> actors.ActorRef[Any]:
        if space_id in self.deleting:
            raise NotFound(f"no space {space_id!r}")
        if self.owned is not None and space_id not in self.owned:
            if await self.store.get_space(space_id) is None:
                raise NotFound(f"no space {space_id!r}")
            raise _not_here(space_id)
        ref = self.spaces.whereis(space_id)
        if isinstance(ref, actors.ActorRef) and not ref.stopped:
            return ref
        if not isinstance(space_id, str) or len(space_id) != 26:
            raise NotFound(f"no space {space_id!r}")
        try:
            started = await self.spaces.start_child(
                self._spec(space_id), exist_ok=True, timeout=ASK_TIMEOUT
            )
        except actors.ChildStartFailed as exc:
            if isinstance(exc.__cause__, EmitError):
                raise exc.__cause__ from None
            raise Unavailable(f"space {space_id} failed to load: {exc.__cause__}") from None
        except actors.AskTimeout:
            # Its load goes on beside the supervisor's loop; a later request finds it.
            raise Unavailable(f"space {space_id} is still loading; retry") from None
        except actors.ActorError as exc:
            raise Unavailable(f"the runtime is stopping: {exc}") from None
        return started

    async def start_spaces(self, *, strict: bool = True) -> None:
        """Load every space now (rather than on first use): recovery at start. Not
        ``strict``: a space that fails to load is logged and left to its next request."""
        for space in await self.store.list_spaces():
            if self.owned is not None and space.id not in self.owned:
                continue  # another node's
            try:
                await self._space_ref(space.id)
            except EmitError as exc:
                if strict:
                    raise
                log.warning("space %s did not load: %s", space.id, exc)

    # ----------------------------------------------------------------- spaces

    async def create_space(self, name: str) -> Space:
        space, public = make_space(name, self.clock.now())
        await self._commit(Changes(spaces=[space], tokens=[public]))
        if self.owned is None:
            await self._space_ref(space.id)
        elif self.space_created is not None:  # it runs where the cluster places it
            await self.space_created(space.id)
        return space

    async def list_spaces(self) -> list[Space]:
        return await self.store.list_spaces()

    async def get_space(self, space_id: str) -> Space:
        space = await self.store.get_space(space_id)
        if space is None:
            raise NotFound(f"no space {space_id!r}")
        return space

    async def update_space(self, space_id: str, settings: Mapping[str, Any]) -> Space:
        """Change the settings named (others stay as they are; null removes one):
        ``retryBackoff``, ``signingSecret``, ``pushUrl``, ``pushHeaders``, ``pushNames``,
        ``rateLimit``, ``retention``, ``slackUrl``, ``slackEvents``; and ``name``, the
        space's own (as on create). A bad one refuses the whole change."""
        space = await self.get_space(space_id)
        if not isinstance(settings, Mapping):
            raise InvalidRequest("settings must be a JSON object")
        settings = dict(settings)
        new_name = check_name(settings.pop("name")) if "name" in settings else space.name
        merged = dict(space.settings)
        for name, value in settings.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        # Refuses unknown or bad settings whole.
        parsed = validate_settings(merged, allow_private=self.callback_policy.allow_private)
        if parsed.retry_backoff is not None:
            merged["retryBackoff"] = dict(parsed.retry_backoff.to_wire())  # as applied
        updated = Space(space.id, new_name, space.public_token, space.created_at, merged)
        await self._commit(Changes(spaces=[updated]))
        ref = await self._space_ref(space_id)
        await ref.ask(ApplySettings(parsed), timeout=ASK_TIMEOUT)
        return updated

    async def rename_space(self, space_id: str, name: str) -> Space:
        """Give the space a new name (1 to 200 characters, as on create); its id, keys
        and jobs stay as they are."""
        return await self.update_space(space_id, {"name": name})

    async def delete_space(self, space_id: str) -> None:
        await self.get_space(space_id)
        if space_id in self.deleting:
            raise NotFound(f"no space {space_id!r}")  # a delete of it is under way
        # From now until the delete is committed (or has failed), requests naming the
        # space are refused: one arriving after the actor stopped would start it again.
        self.deleting.add(space_id)
        try:
            ref = self.spaces.whereis(space_id)
            if isinstance(ref, actors.ActorRef):
                # Parked long polls get an empty answer, not a 503: the space is going away.
                with contextlib.suppress(actors.ActorError):
                    await ref.ask(ReleasePollers(), timeout=ASK_TIMEOUT)
                await self.spaces.stop_child(space_id)
            await self._commit(Changes(deleted_spaces=[space_id]))
        finally:
            self.deleting.discard(space_id)
        self.hub.forget_space(space_id)
        self.metrics.forget_space(space_id)

    # ----------------------------------------------------------------- tokens

    async def create_token(
        self,
        space_id: str,
        *,
        name: str,
        scopes: Sequence[str] | None = None,
        preset: str | None = None,
    ) -> NewToken:
        await self.get_space(space_id)
        token, made = make_token(space_id, name, scopes, preset, self.clock.now())
        await self._commit(Changes(tokens=[token]))
        return made

    async def list_tokens(self, space_id: str) -> list[Token]:
        """The space's tokens, each with its last use (as noted, if not yet written)."""
        await self.get_space(space_id)
        tokens = await self.store.list_tokens(space_id)
        uses = self.key_uses
        return [
            dataclasses.replace(token, last_used_at=uses[token.id])
            if token.id in uses and (token.last_used_at or 0) < uses[token.id]
            else token
            for token in tokens
        ]

    def note_key_use(self, token_id: str) -> None:
        """A request used the key of ``token_id`` now. Noted in memory only: the uses
        are written together every `KEY_USES_EVERY` seconds and as the runtime stops
        (`flush_key_uses`), never a write per request."""
        self.key_uses[token_id] = self.clock.now()

    async def flush_key_uses(self) -> int:
        """Write the uses noted since the last flush, in one commit; how many keys. If
        the store refuses, they are kept for the next flush."""
        uses, self.key_uses = self.key_uses, {}
        if not uses:
            return 0
        try:
            await self._commit(Changes(token_uses=list(uses.items())))
        except EmitError:
            for token_id, at in uses.items():
                self.key_uses.setdefault(token_id, at)  # unless used again meanwhile
            raise
        return len(uses)

    async def revoke_token(self, space_id: str, token_id: str) -> None:
        tokens = {token.id: token for token in await self.list_tokens(space_id)}
        token = tokens.get(token_id)
        if token is None:
            raise NotFound(f"no token {token_id!r} in space {space_id}")
        if token.revoked_at is None:
            await self._commit(Changes(revoked_tokens=[(token_id, self.clock.now())]))
        self.hub.end_key(token_id, 4401)  # its open WebSockets end now

    async def authenticate(self, key: str) -> Token | None:
        """The live token a key stands for, or None (unknown or revoked)."""
        try:
            digest = hash_key(key)
        except UnicodeEncodeError:  # a lone surrogate: no key emit made looks like that
            return None
        token = await self.store.token_by_hash(digest)
        if token is None or token.revoked_at is not None:
            return None
        return token

    async def end_revoked_streams(self) -> list[str]:
        """End the streams whose keys were revoked behind this runtime's back (by the
        CLI, another process), looked up in one read; the ids of their tokens. A key
        revoked through `revoke_token` ends its streams at once."""
        keys = self.hub.open_keys()
        if not keys:
            return []
        live = await self.store.live_key_hashes({key.key_hash for key in keys})
        ended = [key.token_id for key in keys if key.key_hash not in live]
        for token_id in ended:
            self.hub.end_key(token_id, 4401)
        return ended

    def metrics_text(self) -> bytes:
        """Every metric of this runtime, in the Prometheus text format
        (``emit.metrics.CONTENT_TYPE``)."""
        return self.metrics.render()

    def finished_per_minute(self, space_id: str) -> list[Minute]:
        """The space's completed and dead jobs per minute over the last hour, oldest
        first, the current minute last (`emit.throughput`): counted in memory since this
        runtime started."""
        recent = self.metrics.recent.get(space_id) or Throughput()
        return recent.last_hour(self.clock.now())

    async def sweep(self) -> Swept:
        """Delete now, in every running space, one batch of the finished jobs past
        their retention (the sweeper does this on its timer)."""
        return await sweep_spaces(self, self.retention)

    def running_spaces(self) -> int:
        """How many spaces have an actor now."""
        return len(self.spaces.children())

    async def release_pollers(self) -> int:
        """Answer every parked long poll of every space with no jobs, so that a server
        shutting down need not wait out their waits; from now on, polls park no more
        (a worker polling again at once would hold the shutdown up just the same). How
        many were released."""
        self.draining = True
        released = 0
        for key in self.spaces.children():
            ref = self.spaces.whereis(key)
            if isinstance(ref, actors.ActorRef) and not ref.stopped:
                # A space that is failing or restarting has no parked polls to release.
                with contextlib.suppress(actors.ActorError, EmitError):
                    released += await ref.ask(ReleasePollers(), timeout=ASK_TIMEOUT)
        return released

    async def check_ready(self) -> None:
        """Raise `Unavailable`, with the cause, unless the store takes writes: the writer
        answers (once what was queued before it has settled), and, if the last write
        failed, the disk takes a write now (a commit of nothing never touches it)."""
        await self._commit(Changes())
        try:
            await self.store.check_writable()
        except Exception as exc:
            raise Unavailable(f"not ready: the store is not taking writes: {exc}") from None


def _not_here(space_id: str) -> Unavailable:
    """The refusal of a request for a space another node owns, or none yet."""
    return Unavailable(
        f"space {space_id} is not served by this node now (moving); retry",
        retry_after=MOVING_RETRY_AFTER,
    )


def _store(
    data: str | os.PathLike[str] | Store | None, synchronous: str, node: str | None
) -> Store:
    if node is not None and not is_postgres_url(data):
        raise ValueError("a node of a cluster needs a PostgreSQL store (its URL as data)")
    if isinstance(data, Store):
        return data
    if data is None:
        return MemoryStore()
    if is_postgres_url(data):
        from .store.postgres import PostgresStore  # psycopg only for those who use it

        return PostgresStore(data, node_id=node)
    return SQLiteStore(Path(data) / "emit.db", synchronous=synchronous)


@asynccontextmanager
async def open_runtime(
    data: str | os.PathLike[str] | Store | None = "emit-data",
    *,
    synchronous: str = "FULL",
    start_time: float | None = None,
    allow_private_callbacks: bool = False,
    callback_policy: CallbackPolicy | None = None,
    callback_transport: httpx.AsyncBaseTransport | None = None,
    retention: Retention | None = None,
    sweep_every: float = SWEEP_EVERY,
    key_uses_every: float = KEY_USES_EVERY,
    shared: bool = False,
    node: str | None = None,
) -> AsyncIterator[Runtime]:
    """Run emit for the duration of the block. ``data`` is a directory (the SQLite file
    ``emit.db`` lives in it), a PostgreSQL URL (``postgresql://user:password@host/db``),
    None for an in-memory store, or a `Store` of the caller's
    (opened as the block starts and closed as it ends). Every space in the store is
    loaded before the block runs, with its deadlines: jobs whose deadline passed while
    emit was down are handled at once.

    ``synchronous`` is SQLite's: FULL (default) survives power loss; NORMAL survives a
    crash of emit only. ``start_time`` is the wall time (epoch seconds) at which the
    runtime's clock starts; all later times are it plus trio's elapsed time (default:
    the real time now). Tests use it to pretend emit was down for an hour.

    Webhooks to loopback or private addresses are refused unless
    ``allow_private_callbacks`` (a literal one, or ``localhost``, already when the job
    or the push URL is set); ``callback_policy`` sets tries, backoff and timeouts;
    ``callback_transport`` replaces the network (tests use ``httpx.MockTransport``).

    Finished jobs are deleted once past their retention: a space's ``retention`` setting,
    else ``retention`` (default: `Retention`'s, a week for completed jobs, 30 days for
    dead and killed ones), swept every ``sweep_every`` seconds.

    When each key was last used is noted in memory and written every ``key_uses_every``
    seconds, and as the block ends.

    ``shared``: other nodes share the store. The runtime then runs no space until told
    it owns it (`Runtime.gained`, with the epoch of its claim) and stops one as soon as
    it does not (`Runtime.lost`); every write of a space carries that epoch, and a store
    shared by nodes refuses it once another node has claimed the space.

    ``node``: this node's id, on a PostgreSQL store several nodes share (``data`` its
    URL): ``shared``, and the store fences every write of a space with this node's lease
    on it. `emit.cluster.node.joined` then joins the cluster."""
    store = _store(data, synchronous, node)
    shared = shared or node is not None
    await store.open()
    try:
        clock = Clock(start_time)
        metrics = Metrics()
        writer_spec: actors.ActorSpec[Any] = actors.ActorSpec(
            "store", lambda: StoreWriter(store, metrics), capacity=4096, shutdown=60.0
        )
        # Restart intensity (docs/architecture.md, "Supervision"). The spaces supervisor
        # gives up on a space that fails in a loop: 10 restarts in 30 s, which the
        # default backoff (0.1 s doubling to 5 s) reaches after 26.3 s; more spaces
        # failing together reach it sooner. The root then restarts the spaces (and what
        # started after them) from the store. A store that fails for minutes (a full
        # disk) makes every space that writes fail, so the spaces supervisor may give up
        # again and again: the root paces those restarts with the same backoff (one
        # every 5 s at most) and gives up only after 600 in an hour, 50 minutes of
        # failing without a break; then `emit serve` exits for its service manager.
        spaces_spec = actors.SupervisorSpec(
            "spaces", max_restarts=10, within=30.0, capacity=4096, on_restart=metrics.restarted
        )
        async with actors.open_system(
            "emit",
            children=[writer_spec, spaces_spec],
            strategy=actors.Strategy.REST_FOR_ONE,
            max_restarts=600,
            within=3600.0,
            on_restart=metrics.restarted,
        ) as system:
            writer = system.whereis("store")
            spaces = system.whereis("spaces")
            assert isinstance(writer, actors.ActorRef)
            assert isinstance(spaces, actors.SupervisorRef)
            policy = callback_policy or CallbackPolicy()
            if allow_private_callbacks:
                policy = dataclasses.replace(policy, allow_private=True)
            runtime = Runtime(store, clock, system, writer, spaces, policy, metrics)
            if shared:
                runtime.owned = {}
            if retention is not None:
                runtime.retention = retention
            # Before any space: a callback a space queues always finds the sender.
            runtime.callbacks = await system.spawn(
                lambda: CallbackSender(
                    store,
                    runtime._record_callback,
                    clock,
                    policy,
                    callback_transport,
                    metrics=metrics,
                    owns=runtime.owns,
                ),
                key="callbacks",
                shutdown=policy.timeout + 1,
            )
            # Last: every space loads now, and again after any restart of those before.
            runtime.starter = await system.spawn(lambda: SpaceStarter(runtime), key="space-starter")
            # After the spaces, so that a sweeper that fails restarts alone.
            await system.spawn(
                lambda: Sweeper(runtime, runtime.retention, sweep_every), key="sweeper"
            )
            # Last: it stops first, and writes the last uses while the writer still runs.
            await system.spawn(lambda: KeyUseFlusher(runtime, key_uses_every), key="key-uses")
            yield runtime
    finally:
        await store.close()


__all__ = ["NewToken", "Runtime", "SpaceJobs", "iso", "open_runtime"]
