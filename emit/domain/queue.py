"""The ready queue of one space: highest priority first, ties oldest first, with a
strict filter on job names.

One heap per job name, so a filtered poll looks only at the names it asked for and a
poll stays O(log n) however many jobs wait. Entries are removed lazily: a job that left
the pending state (killed, claimed by id) keeps its entry until it reaches the top,
where its stale ``queue_token`` gives it away.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

from .job import Job

_Entry = tuple[int, int, int, int, Job]  # (-priority, seq, push number, queue_token, job)


class ReadyQueue:
    __slots__ = ("_heaps", "_pushes", "_size")

    def __init__(self) -> None:
        self._heaps: dict[str, list[_Entry]] = {}
        self._size = 0
        self._pushes = itertools.count()  # never lets a comparison reach the Job

    def __len__(self) -> int:
        """Pending jobs in the queue (stale entries are not counted)."""
        return self._size

    def push(self, job: Job) -> None:
        if job.in_queue:
            return
        job.in_queue = True
        job.queue_token += 1
        heap = self._heaps.get(job.name)
        if heap is None:
            heap = self._heaps[job.name] = []
        heapq.heappush(heap, (-job.priority, job.seq, next(self._pushes), job.queue_token, job))
        self._size += 1

    def extend(self, jobs: Iterable[Job]) -> None:
        """Queue many jobs at once (recovery): one heapify per name, not a push per job."""
        touched = set()
        for job in jobs:
            if job.in_queue:
                continue
            job.in_queue = True
            job.queue_token += 1
            heap = self._heaps.get(job.name)
            if heap is None:
                heap = self._heaps[job.name] = []
            heap.append((-job.priority, job.seq, next(self._pushes), job.queue_token, job))
            touched.add(job.name)
            self._size += 1
        for name in touched:
            heapq.heapify(self._heaps[name])

    def discard(self, job: Job) -> None:
        """Take the job out (it left the pending state some other way than `pop`)."""
        if not job.in_queue:
            return
        job.in_queue = False
        job.queue_token += 1
        self._size -= 1

    def _top(self, name: str) -> _Entry | None:
        heap = self._heaps.get(name)
        while heap:
            entry = heap[0]
            job = entry[4]
            if job.queue_token == entry[3] and job.in_queue:
                return entry
            heapq.heappop(heap)
        if heap is not None:
            del self._heaps[name]
        return None

    def peek(self, names: Iterable[str] | None = None) -> Job | None:
        """The job a poll for ``names`` (None: any name) would get next."""
        best: _Entry | None = None
        for name in list(self._heaps) if names is None else names:
            entry = self._top(name)
            if entry is not None and (best is None or entry[:2] < best[:2]):
                best = entry
        return None if best is None else best[4]

    def pop(self, names: Iterable[str] | None = None) -> Job | None:
        job = self.peek(names)
        if job is not None:
            heapq.heappop(self._heaps[job.name])
            job.in_queue = False
            job.queue_token += 1
            self._size -= 1
        return job
