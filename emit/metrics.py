"""emit's metrics, in the Prometheus text format (docs/operations.md, "Metrics").

One `Metrics` per runtime, with a registry of its own (never prometheus-client's
process-wide default), so that runtimes in one process (tests, an embedding program)
count apart. Each part of the engine counts what it does where it happens, in label
children bound once (a space's when its actor starts, a route's on its first request),
so counting is a method call on an object already at hand:

- a space actor counts a write's created and finished jobs and lease expiries once it
  is durable, from what its `Effects` already carry (`SpaceMeter`), and its completed
  and dead jobs by the minute for the dashboard's chart (`emit.throughput`);
- the store writer times each transaction and counts its rows;
- the callback sender counts each webhook try by outcome;
- the supervisors report restarts (`Metrics.restarted`, their ``on_restart`` hook);
- the HTTP edge counts and times each request under its route template (`HttpMeter`).

What is a current value rather than a count (jobs by status, open streams) is read when
scraped, by a collector: nothing is kept up to date as it changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .domain.model import FINAL, JobStatus
from .throughput import Throughput

if TYPE_CHECKING:
    from .domain.space import Effects
    from .realtime.hub import EventHub

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of `Metrics.render`'s text."""

REQUEST_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
"""Buckets of a request's duration: most answers take well under a millisecond to a few;
a long poll may wait up to 60 s."""
COMMIT_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
COMMIT_ROWS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
"""Buckets of a transaction's rows (the writer commits at most 50,000 together)."""
CALLBACK_OUTCOMES = ("delivered", "retrying", "given_up")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route of a request no route matched (a 404, a 405)."""
MAX_BOUND = 4096
"""Label combinations an `HttpMeter` keeps bound at most (a flood of odd methods on
unknown paths must not grow it for ever: past this it starts afresh)."""


class SpaceMeter:
    """One space's counters, bound once for its actor."""

    __slots__ = ("created", "expired_ack", "expired_run", "finished", "recent")

    def __init__(self, metrics: Metrics, space_id: str) -> None:
        self.recent = metrics.throughput(space_id)
        self.created = metrics.jobs_created.labels(space_id)
        self.finished = {
            status: metrics.jobs_finished.labels(space_id, status.value) for status in FINAL
        }
        self.expired_ack = metrics.lease_expiries.labels(space_id, "ack")
        self.expired_run = metrics.lease_expiries.labels(space_id, "run")

    def durable(self, effects: Effects, now: float) -> None:
        """Count a write of the space, durable at ``now`` (wall seconds)."""
        if effects.inserted:
            self.created.inc(len(effects.inserted))
        finished = self.finished
        deltas = effects.deltas
        for status, change in deltas.items():
            if change > 0 and status in finished:
                finished[status].inc(change)
        completed = deltas.get(JobStatus.COMPLETED, 0)
        dead = deltas.get(JobStatus.DEAD, 0)
        if completed > 0 or dead > 0:
            self.recent.add(now, max(completed, 0), max(dead, 0))
        if effects.expired_ack:
            self.expired_ack.inc(effects.expired_ack)
        if effects.expired_run:
            self.expired_run.inc(effects.expired_run)


class HttpMeter:
    """Counts and times requests by route template, method and status; each combination's
    children are bound on its first request."""

    __slots__ = ("_bound", "_duration", "_requests")

    def __init__(self, requests: Counter, duration: Histogram) -> None:
        self._requests = requests
        self._duration = duration
        self._bound: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        bound = self._bound.get((route, method, status))
        if bound is None:
            bound = self._bind(route, method, status)
        bound[0].inc()
        bound[1].observe(seconds)

    def _bind(self, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        if len(self._bound) >= MAX_BOUND:
            self._bound.clear()
        label = method if method in METHODS else "other"
        bound = (self._requests.labels(route, label, str(status)), self._duration.labels(route))
        self._bound[(route, method, status)] = bound
        return bound


class Metrics:
    """Every metric of one runtime, and its registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.jobs_created = Counter(
            "emit_jobs_created", "Jobs created, once durable.", ["space"], registry=registry
        )
        self.jobs_finished = Counter(
            "emit_jobs_finished",
            "Jobs that reached a final status (completed, dead, killed), once durable.",
            ["space", "status"],
            registry=registry,
        )
        self.lease_expiries = Counter(
            "emit_lease_expiries",
            "Leases that expired: ack (a delivered job never acked, back to pending) or "
            "run (a running job past its timeout, failed with timeout).",
            ["space", "kind"],
            registry=registry,
        )
        self.callbacks = Counter(
            "emit_callbacks",
            "Webhook tries by outcome: delivered, retrying (failed, to be tried again), "
            "given_up (failed for good).",
            ["outcome"],
            registry=registry,
        )
        self.http_requests = Counter(
            "emit_http_requests",
            "HTTP requests by route template, method and status (499: the client left "
            "before the answer began).",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "emit_http_request_duration_seconds",
            "HTTP request duration by route template, to the last byte of the answer "
            "(a long poll's wait included).",
            ["route"],
            buckets=REQUEST_SECONDS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "emit_store_commit_seconds",
            "Duration of each store transaction (a group commit), fsync included.",
            buckets=COMMIT_SECONDS,
            registry=registry,
        )
        self.commit_rows = Histogram(
            "emit_store_commit_rows",
            "Rows (jobs, events, log lines) in each store transaction.",
            buckets=COMMIT_ROWS,
            registry=registry,
        )
        self.actor_restarts = Counter(
            "emit_actor_restarts",
            "Restarts by a supervisor, by the actor's path in the tree (emit/store, "
            "emit/spaces, emit/spaces/<space id>, emit/callbacks, ...).",
            ["actor"],
            registry=registry,
        )
        self.http = HttpMeter(self.http_requests, self.http_duration)
        self._callbacks = {outcome: self.callbacks.labels(outcome) for outcome in CALLBACK_OUTCOMES}
        self.spaces: dict[str, Mapping[JobStatus, int]] = {}
        self.pollers: dict[str, Callable[[], int]] = {}
        """Per running space: how many long polls are parked on it now (read when scraped)."""
        """Each running space's durable counts by status (its actor's own dict, read when
        scraped)."""
        self.hub: EventHub | None = None
        """The hub whose streams are counted when scraped."""
        self.recent: dict[str, Throughput] = {}
        """Each space's finishes per minute over the last hour (the dashboard's chart):
        kept across restarts of its actor, dropped with the space."""
        registry.register(_Current(self))

    # ----------------------------------------------------------------- the engine

    def space(self, space_id: str) -> SpaceMeter:
        return SpaceMeter(self, space_id)

    def throughput(self, space_id: str) -> Throughput:
        """The space's finishes per minute (made on first use)."""
        found = self.recent.get(space_id)
        if found is None:
            found = self.recent[space_id] = Throughput()
        return found

    def track_space(
        self,
        space_id: str,
        counts: Mapping[JobStatus, int],
        pollers: Callable[[], int] | None = None,
    ) -> None:
        """A space actor loaded: its durable counts are ``counts`` (kept up to date by it),
        and ``pollers`` says how many long polls are parked on it."""
        self.spaces[space_id] = counts
        if pollers is not None:
            self.pollers[space_id] = pollers

    def untrack_space(self, space_id: str, counts: Mapping[JobStatus, int]) -> None:
        """A space actor stopped: its counts are no longer live (unless a newer
        incarnation already tracks its own)."""
        if self.spaces.get(space_id) is counts:
            del self.spaces[space_id]
            self.pollers.pop(space_id, None)

    def forget_space(self, space_id: str) -> None:
        """The space was deleted: its series go."""
        self.spaces.pop(space_id, None)
        self.pollers.pop(space_id, None)
        self.recent.pop(space_id, None)
        self.jobs_created.remove(space_id)
        for status in FINAL:
            self.jobs_finished.remove(space_id, status.value)
        for kind in ("ack", "run"):
            self.lease_expiries.remove(space_id, kind)
        self.actor_restarts.remove(f"emit/spaces/{space_id}")

    def store_commit(self, seconds: float, rows: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_rows.observe(rows)

    def callback(self, outcome: str) -> None:
        """A webhook try ended: ``outcome`` is one of `CALLBACK_OUTCOMES`."""
        self._callbacks[outcome].inc()

    def restarted(self, actor: str, cause: Exception | None) -> None:
        """A supervisor's ``on_restart``: it restarts ``actor``."""
        self.actor_restarts.labels(actor).inc()

    # --------------------------------------------------------------------- scrape

    def render(self) -> bytes:
        """Every metric, in the Prometheus text format (`CONTENT_TYPE`)."""
        return _generate_latest(self.registry)


class _Current(Collector):
    """The values read when scraped: jobs by space and status, open streams by kind."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        jobs, streams, parked = families
        for space_id, counts in list(self.metrics.spaces.items()):
            for status, count in counts.items():
                jobs.add_metric([space_id, status.value], count)
        for space_id, pollers in list(self.metrics.pollers.items()):
            parked.add_metric([space_id], pollers())
        hub = self.metrics.hub
        if hub is not None:
            statistics = hub.statistics()
            streams.add_metric(["space"], statistics.space_streams)
            streams.add_metric(["job"], statistics.job_streams)
        yield from families

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "emit_jobs",
                "Jobs by space and status, as last committed.",
                labels=["space", "status"],
            ),
            GaugeMetricFamily(
                "emit_stream_subscribers",
                "Open WebSocket streams by kind (space or job).",
                labels=["kind"],
            ),
            GaugeMetricFamily(
                "emit_parked_polls",
                "Long polls waiting for a job, by space (workers idle now).",
                labels=["space"],
            ),
        )
