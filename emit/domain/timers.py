"""One heap of deadlines for a whole space: scheduled jobs coming due, ack deadlines and
run deadlines. The space actor sleeps until `next_at()` — one timer, not a task per job.

Deadlines that move later (progress, keepalive) do not push a new entry: the existing
entry fires, sees the job's later ``deadline`` and is pushed again. Only a deadline that
moves earlier pushes a new entry. So each job has at most one or two entries however
often it reports progress, and memory stays proportional to the live jobs.
"""

from __future__ import annotations

import heapq
import itertools
import math

from .job import Job

_Entry = tuple[float, int, Job]


class Timers:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def track(self, job: Job) -> None:
        """Make sure an entry fires no later than ``job.deadline`` (if it has one)."""
        deadline = job.deadline
        if deadline is None:
            return
        if job.timer_at is None or deadline < job.timer_at:
            job.timer_at = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), job))

    def next_at(self) -> float:
        return self._heap[0][0] if self._heap else math.inf

    def due(self, now: float, limit: int) -> list[Job]:
        """Pop up to ``limit`` jobs whose deadline has passed; re-file those whose deadline
        moved later, and drop entries the job no longer owns."""
        heap = self._heap
        jobs: list[Job] = []
        while heap and heap[0][0] <= now and len(jobs) < limit:
            at, _, job = heapq.heappop(heap)
            if job.timer_at != at:
                continue  # superseded by an earlier entry
            job.timer_at = None
            if job.deadline is None:
                continue  # the job moved on
            if job.deadline > now:
                self.track(job)
                continue
            jobs.append(job)
        return jobs
