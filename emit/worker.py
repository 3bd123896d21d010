"""The worker runner: `Worker`, with handlers registered by job name, runs the worker's
side of the protocol for them (see docs/client.md, "The worker runner").

It long-polls only the registered names with ``ack: true``, runs each job's handler
(a plain function in a thread, a coroutine function as a task), keeps the job alive
while the handler runs, and completes it with the handler's return value or fails it
with the exception's text, sending the outcomes of handlers that finish together in one
batch. A lost lease (a keepalive or a report answered 409 or 404: the job timed out,
was killed, or another worker holds it) cancels the handler. A stop (`Worker.stop`, or
SIGINT/SIGTERM under `Worker.run`) stops polling, lets running handlers finish within
the grace period, then fails the rest so they are retried; a second signal stops at
once. Connection errors, 503 and 429 back off and resume: a server restart under a
running worker loses nothing and acknowledges nothing twice.

The runner speaks to the server through any object with `SpaceJobs`'s worker methods:
an `AsyncClient` (the default, built from the worker's url, key and space) or an
embedded runtime's `SpaceJobs` (`emit.testing` runs handlers in-process that way).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import signal
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import trio
import trio.lowlevel

from .client import AsyncClient, jittered_backoff
from .domain.views import Delivery
from .errors import Conflict, EmitError, NotFound, RateLimited, Unavailable

log = logging.getLogger("emit.worker")

T = TypeVar("T")

POLL_WAIT = 30.0
"""Seconds a poll waits on the server for a job (the spec allows up to 60)."""
MAX_POLL = 50
"""The most jobs one poll may ask for (the spec's limit)."""
MAX_BATCH = 500
"""The most outcomes one complete or fail request may carry (the spec's limit)."""
GRACE = 30.0
"""Seconds running handlers get to finish after a stop before their jobs are failed."""
HARD_STOP_FLUSH = 2.0
"""Seconds a second signal leaves to report the jobs it abandons."""
MAX_ERROR = 8000
"""Characters of a handler's exception text sent as the job's error."""
STOPPED = "the worker stopped before the handler finished; the job will be retried"

TRANSIENT: tuple[type[BaseException], ...] = (httpx.TransportError, Unavailable, RateLimited)
"""Failures that pass: the server restarting, its storage failing for a while, a rate
limit. The runner waits and tries again."""
LOST: tuple[type[BaseException], ...] = (Conflict, NotFound)
PASSING: tuple[type[BaseException], ...] = (*TRANSIENT, EmitError)
"""What `passing` looks at: TRANSIENT, and any answer of 500 or more."""
"""Answers that mean the job is no longer this worker's to run."""


def passing(error: BaseException) -> bool:
    """A failure that passes (TRANSIENT), or a 5xx answer: a proxy's 502 or 504 while
    the server behind it restarts, or a 500 from a server in trouble. The runner waits
    and tries again rather than giving up on the job or the worker."""
    return isinstance(error, TRANSIENT) or (isinstance(error, EmitError) and error.status >= 500)


class WorkerJobs(Protocol):
    """What the runner needs of the server: `SpaceJobs`'s worker methods, which
    `AsyncClient` has too."""

    async def poll(
        self,
        count: int = 1,
        *,
        names: str | Sequence[str] | None = None,
        wait: float = 0,
        ack: bool = False,
    ) -> list[Delivery]: ...

    async def keepalive(
        self, job_id: str, *, seconds: int | None = None, lease_id: str | None = None
    ) -> Any: ...

    async def progress(
        self,
        job_id: str,
        percent: float,
        message: str,
        *,
        sub_progress: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> Any: ...

    async def checkpoint(
        self, job_id: str, state: Mapping[str, Any], *, lease_id: str | None = None
    ) -> Any: ...

    async def event(
        self, job_id: str, type: str, data: Any = None, *, lease_id: str | None = None
    ) -> Any: ...

    async def log(
        self,
        job_id: str,
        level: str,
        message: str,
        *,
        fields: Mapping[str, Any] | None = None,
        lease_id: str | None = None,
    ) -> int: ...

    async def complete_many(self, items: Sequence[Mapping[str, Any]]) -> Sequence[Any]: ...

    async def fail_many(self, items: Sequence[Mapping[str, Any]]) -> Sequence[Any]: ...


class LeaseLost(Exception):
    """The job is no longer this worker's: it timed out, was killed or deleted, or
    another worker holds it now. Raised by a context's calls once that is known; the
    runner drops the handler's outcome."""


class _Backoff:
    """Jittered exponential waits for one run of failures; `reset` after a success."""

    def __init__(self) -> None:
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next(self, error: BaseException | None = None) -> float:
        delay = jittered_backoff(self.failures)
        self.failures += 1
        if isinstance(error, RateLimited) and error.retry_after:
            delay = max(delay, error.retry_after)
        return delay


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_ERROR]


@dataclass(slots=True)
class _Outcome:
    """A finished attempt, to report: ``complete`` with ``value`` as the result, or
    ``fail`` with ``value`` as the error."""

    action: str
    job_id: str
    lease_id: str
    value: Any

    def item(self) -> dict[str, Any]:
        key = "result" if self.action == "complete" else "error"
        return {"id": self.job_id, key: self.value, "leaseId": self.lease_id}


class _Attempt:
    """One job's run on this worker: its lease, its keepalive clock and its end."""

    def __init__(self, run: _Run, job: Delivery) -> None:
        self.run = run
        self.job = job
        self.scope = trio.CancelScope()
        self.touched = trio.current_time()
        self.lost: str | None = None
        self.lost_event = threading.Event()
        self.stopped = False

    def lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            self.lost_event.set()
            log.warning("job %s (%s): lease lost: %s", self.job.id, self.job.name, reason)
            if self.run.handler_is_async(self.job.name):
                self.scope.cancel()  # a thread cannot be interrupted: it sees ctx.cancelled

    def abandon(self) -> None:
        """The worker is stopping and will not wait for this handler any longer."""
        self.stopped = True
        self.scope.cancel()

    async def call(self, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """One of the job's calls, fenced by its lease; passing failures are retried
        until it goes through or the lease is known lost."""
        backoff = _Backoff()
        while True:
            if self.lost is not None:
                raise LeaseLost(self.lost)
            try:
                answer = await method(self.job.id, *args, lease_id=self.job.lease_id, **kwargs)
            except LOST as exc:
                self.lose(str(exc))
                raise LeaseLost(str(exc)) from exc
            except PASSING as exc:
                if not passing(exc):
                    raise
                await trio.sleep(backoff.next(exc))
            else:
                return answer

    async def touch(self, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """A call that restarts the run deadline (progress, checkpoint)."""
        answer = await self.call(method, *args, **kwargs)
        self.touched = trio.current_time()
        return answer

    async def keep_alive(self) -> None:
        """Keepalive a third of the job's timeout after the last call that restarted
        its deadline, until cancelled or the lease is lost."""
        interval = max(0.5, self.job.timeout_seconds / 3)
        backoff = _Backoff()
        while self.lost is None:
            await trio.sleep_until(self.touched + interval)
            if trio.current_time() < self.touched + interval:
                continue  # a progress report restarted the deadline meanwhile
            try:
                await self.run.jobs.keepalive(self.job.id, lease_id=self.job.lease_id)
            except LOST as exc:
                self.lose(str(exc))
            except PASSING as exc:
                if not passing(exc):
                    raise
                await trio.sleep(min(interval, backoff.next(exc)))
            else:
                backoff.reset()
                self.touched = trio.current_time()


class AsyncContext:
    """What an ``async def`` handler gets beside its job: calls on the job it runs,
    each fenced by the job's lease, and whether the lease is lost (the handler is then
    cancelled as well)."""

    def __init__(self, attempt: _Attempt) -> None:
        self._attempt = attempt
        self._jobs = attempt.run.jobs

    @property
    def job(self) -> Delivery:
        return self._attempt.job

    @property
    def attempt(self) -> int:
        """The attempt number: 0 on the first run, 1 on the first retry, …"""
        return self._attempt.job.attempt_number

    @property
    def previous_checkpoint(self) -> Any:
        """The last checkpoint an earlier attempt saved, or None."""
        return self._attempt.job.checkpoint

    @property
    def cancelled(self) -> bool:
        """The lease is lost or the worker gave up waiting: stop working."""
        return self._attempt.lost is not None or self._attempt.stopped

    async def progress(
        self, percent: float, message: str = "", *, sub_progress: Mapping[str, Any] | None = None
    ) -> None:
        await self._attempt.touch(self._jobs.progress, percent, message, sub_progress=sub_progress)

    async def checkpoint(self, state: Mapping[str, Any]) -> None:
        await self._attempt.touch(self._jobs.checkpoint, state)

    async def event(self, type: str, data: Any = None) -> None:
        await self._attempt.call(self._jobs.event, type, data)

    async def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        await self._attempt.call(self._jobs.log, level, message, fields=fields or None)


class Context:
    """What a plain (``def``) handler gets beside its job: `AsyncContext`'s calls, made
    from the handler's thread. A thread cannot be interrupted: once the lease is lost,
    `cancelled` is true and every call raises `LeaseLost`."""

    def __init__(self, attempt: _Attempt) -> None:
        self._async = AsyncContext(attempt)
        self._attempt = attempt

    @property
    def job(self) -> Delivery:
        return self._async.job

    @property
    def attempt(self) -> int:
        return self._async.attempt

    @property
    def previous_checkpoint(self) -> Any:
        return self._async.previous_checkpoint

    @property
    def cancelled(self) -> bool:
        return self._async.cancelled

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost, or ``timeout`` seconds; True if it was."""
        return self._attempt.lost_event.wait(timeout)

    def progress(
        self, percent: float, message: str = "", *, sub_progress: Mapping[str, Any] | None = None
    ) -> None:
        trio.from_thread.run(
            functools.partial(self._async.progress, percent, message, sub_progress=sub_progress)
        )

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        trio.from_thread.run(self._async.checkpoint, state)

    def event(self, type: str, data: Any = None) -> None:
        trio.from_thread.run(self._async.event, type, data)

    def log(self, message: str, *, level: str = "info", **fields: Any) -> None:
        trio.from_thread.run(functools.partial(self._async.log, message, level=level, **fields))


Handler = Callable[[Delivery, Any], Any]
RunSync = Callable[[Callable[[], T]], Awaitable[T]]


def _threads(concurrency: int) -> RunSync[Any]:
    """Plain handlers in threads, as many at once as the concurrency (trio's own default
    limit, 40 threads, would cap a larger one)."""
    limiter = trio.CapacityLimiter(concurrency)

    async def in_thread(function: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(function, abandon_on_cancel=True, limiter=limiter)

    return in_thread


class Worker:
    """Handlers by job name, and the loop that runs them (see the module's text).

    ``url``, ``key`` and ``space`` default to ``EMIT_URL``, ``EMIT_WORKER_KEY`` and
    ``EMIT_SPACE_ID``; they are read when the worker starts, so a worker can be made at
    import time and configured later (``emit worker`` does)."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        space: str | None = None,
        *,
        poll_wait: float = POLL_WAIT,
        grace: float = GRACE,
    ) -> None:
        self.url = url
        self.key = key
        self.space = space
        self.poll_wait = poll_wait
        self.grace = grace
        self.handlers: dict[str, Handler] = {}
        self._run: _Run | None = None

    def job(self, name: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of jobs named ``name``:
        ``def handler(job, ctx)`` (run in a thread, ``ctx`` a `Context`) or
        ``async def handler(job, ctx)`` (``ctx`` an `AsyncContext`). It returns the
        job's result (JSON); raising fails the attempt with the exception's text."""
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ValueError("a job name is a string of 1 to 200 characters")

        def register(handler: Handler) -> Handler:
            if name in self.handlers:
                raise ValueError(f"jobs named {name!r} already have a handler")
            self.handlers[name] = handler
            return handler

        return register

    def run(self, concurrency: int = 8) -> None:
        """Run until SIGINT or SIGTERM (a second one stops at once). Blocks."""
        trio.run(self._run_until_signalled, concurrency)

    async def _run_until_signalled(self, concurrency: int) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for number in signals:
                        name = signal.Signals(number).name
                        if self._run is not None and self._run.stopping:
                            log.warning("%s again: stopping at once", name)
                            self.stop(now=True)
                        else:
                            log.info(
                                "%s: stopping; running handlers have %gs to finish (again to "
                                "stop at once)",
                                name,
                                self.grace,
                            )
                            self.stop()

                nursery.start_soon(on_signal)
                await self.serve(concurrency=concurrency)
                nursery.cancel_scope.cancel()

    async def serve(
        self,
        *,
        concurrency: int = 8,
        jobs: WorkerJobs | None = None,
        run_sync: RunSync[Any] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run in the caller's trio program until `stop` (then return) or cancelled.
        ``jobs`` is what to speak to (default: an `AsyncClient` on the worker's url,
        key and space); ``run_sync`` runs a plain handler (default: in a thread)."""
        if not self.handlers:
            raise ValueError("this worker has no handlers: register some with @worker.job")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be a positive integer")
        if self._run is not None:
            raise RuntimeError("this worker is already running")
        async with AsyncExitStack() as stack:
            if jobs is None:
                client = AsyncClient(self.url, self._key(), self.space)
                await stack.enter_async_context(client)
                if client.space_id is None:
                    raise ValueError("no space: pass space= or set EMIT_SPACE_ID")
                jobs = client
            self._run = _Run(self, jobs, concurrency, run_sync or _threads(concurrency))
            try:
                await self._run.main(task_status)
            finally:
                self._run = None

    def _key(self) -> str | None:
        return self.key or os.environ.get("EMIT_WORKER_KEY") or None

    def stop(self, *, now: bool = False) -> None:
        """Stop polling; running handlers get the grace period (none with ``now``)
        before their jobs are failed so they are retried. Call from the worker's trio
        thread (a signal handler task, a handler's task)."""
        if self._run is not None:
            self._run.stop(now=now)

    def handler_names(self) -> list[str]:
        return list(self.handlers)


class _Run:
    """One `Worker.serve`: the poll loop, the attempts running, and the reporter."""

    def __init__(
        self, worker: Worker, jobs: WorkerJobs, concurrency: int, run_sync: RunSync[Any]
    ) -> None:
        self.worker = worker
        self.jobs = jobs
        self.concurrency = concurrency
        self.run_sync = run_sync
        self.free = concurrency
        self.room = trio.Event()
        self.attempts: dict[str, _Attempt] = {}
        self.idle = trio.Event()
        self.stopping = False
        self.poll_scope = trio.CancelScope()
        self.grace_scope = trio.CancelScope()
        self.report_scope = trio.CancelScope()
        self.outcomes, self.to_report = trio.open_memory_channel[_Outcome](math.inf)

    def handler_is_async(self, name: str) -> bool:
        return inspect.iscoroutinefunction(self.worker.handlers[name])

    def stop(self, *, now: bool) -> None:
        self.stopping = True
        self.poll_scope.cancel()
        if now:
            self.grace_scope.cancel()
            self.report_scope.deadline = trio.current_time() + HARD_STOP_FLUSH

    async def main(self, task_status: trio.TaskStatus[None]) -> None:
        names = self.worker.handler_names()
        log.info("worker started: %s, concurrency %d", ", ".join(names), self.concurrency)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.report)
            async with self.outcomes, trio.open_nursery() as running:
                with self.poll_scope:
                    task_status.started()
                    await self.poll(names, running)
                with self.grace_scope:
                    with trio.move_on_after(self.worker.grace):
                        while self.attempts:
                            self.idle = trio.Event()
                            await self.idle.wait()
                for attempt in list(self.attempts.values()):
                    attempt.abandon()
        log.info("worker stopped")

    # ---------------------------------------------------------------------- polling

    async def poll(self, names: list[str], running: trio.Nursery) -> None:
        backoff = _Backoff()
        while True:
            while self.free == 0:
                self.room = trio.Event()
                await self.room.wait()
            await trio.lowlevel.checkpoint()  # handlers finishing together free their slots first
            count = min(MAX_POLL, self.free)
            try:
                jobs = await self.jobs.poll(
                    count, names=names, wait=self.worker.poll_wait, ack=True
                )
            except PASSING as exc:
                if not passing(exc):
                    raise
                delay = backoff.next(exc)
                log.warning("poll failed (%s); trying again in %.1fs", _error_text(exc), delay)
                await trio.sleep(delay)
                continue
            if backoff.failures:
                log.info("polling again")
            backoff.reset()
            for job in jobs:
                self.free -= 1
                attempt = _Attempt(self, job)
                self.attempts[job.id] = attempt
                running.start_soon(self.attempt, attempt)

    # ---------------------------------------------------------------------- running

    async def attempt(self, attempt: _Attempt) -> None:
        job = attempt.job
        outcome: _Outcome | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(attempt.keep_alive)
                outcome = await self.handle(attempt)
                nursery.cancel_scope.cancel()
        finally:
            del self.attempts[job.id]
            self.free += 1
            self.room.set()
            if not self.attempts:
                self.idle.set()
        if outcome is not None:
            try:
                self.outcomes.send_nowait(outcome)
            except trio.BrokenResourceError:  # stopping at once: the reporter is gone
                log.warning("job %s: %s not reported: stopped at once", job.id, outcome.action)

    async def handle(self, attempt: _Attempt) -> _Outcome | None:
        """Run the handler; the outcome to report, or None when the lease is lost."""
        job = attempt.job
        handler = self.worker.handlers.get(job.name)
        if handler is None:  # the poll names only ours; a server ignoring that is wrong
            return _Outcome("fail", job.id, job.lease_id, f"no handler for jobs named {job.name}")
        try:
            with attempt.scope:
                if self.handler_is_async(job.name):
                    result = await handler(job, AsyncContext(attempt))
                else:
                    result = await self.run_sync(functools.partial(handler, job, Context(attempt)))
        except LeaseLost:
            return None
        except Exception as exc:
            if attempt.lost is not None:
                return None
            log.warning(
                "job %s (%s) attempt %d failed: %s",
                job.id,
                job.name,
                job.attempt_number,
                _error_text(exc),
                exc_info=exc,
            )
            await self.log_traceback(attempt, exc)
            return _Outcome("fail", job.id, job.lease_id, _error_text(exc))
        if attempt.lost is not None:
            return None
        if attempt.scope.cancelled_caught:
            return _Outcome("fail", job.id, job.lease_id, STOPPED)
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as exc:
            error = f"the handler's result is not JSON: {_error_text(exc)}"
            return _Outcome("fail", job.id, job.lease_id, error)
        return _Outcome("complete", job.id, job.lease_id, result)

    async def log_traceback(self, attempt: _Attempt, exc: BaseException) -> None:
        """The failure's traceback as an error line in the job's log (once; a failure to
        write it is not the job's)."""
        text = "".join(traceback.format_exception(exc))[-MAX_ERROR:]
        with suppress(EmitError, httpx.HTTPError):
            await self.jobs.log(attempt.job.id, "error", text, lease_id=attempt.job.lease_id)

    # -------------------------------------------------------------------- reporting

    async def report(self) -> None:
        """Send outcomes as they come, those waiting together in one request per
        action; a request that fails in passing is sent again until it goes through."""
        with self.report_scope:
            async with self.to_report:
                async for first in self.to_report:
                    batch = [first]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(self.to_report.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    for action in ("complete", "fail"):
                        items = [outcome for outcome in batch if outcome.action == action]
                        if items:
                            await self.send(action, items)

    async def send(self, action: str, outcomes: list[_Outcome]) -> None:
        method = self.jobs.complete_many if action == "complete" else self.jobs.fail_many
        backoff = _Backoff()
        while True:
            try:
                answers = await method([outcome.item() for outcome in outcomes])
            except PASSING as exc:
                if passing(exc):
                    delay = backoff.next(exc)
                    log.warning("%s failed (%s); sending again in %.1fs", action, exc, delay)
                    await trio.sleep(delay)
                    continue
                assert isinstance(exc, EmitError)
                # Refused as a whole (a result too large, say): each alone, so one
                # bad outcome costs only its own job.
                if len(outcomes) > 1:
                    for outcome in outcomes:
                        await self.send(action, [outcome])
                elif action == "complete":
                    [outcome] = outcomes
                    error = f"the result was refused: {_error_text(exc)}"
                    await self.send(
                        "fail", [_Outcome("fail", outcome.job_id, outcome.lease_id, error)]
                    )
                else:
                    log.error("job %s: its failure was refused: %s", outcomes[0].job_id, exc)
                return
            break
        for outcome, answer in zip(outcomes, answers, strict=True):
            if isinstance(answer, EmitError):
                # A resend after an answer lost in passing finds it done (409), or the
                # lease ran out while the handler ran: either way the job is not ours.
                log.warning("job %s: %s not recorded: %s", outcome.job_id, action, answer)
