"""The ready queue: highest priority first, ties oldest (lowest seq) first, a strict
filter on job names, and lazy removal of jobs that left some other way."""

from __future__ import annotations

import itertools
import random
from typing import Any

from emit.domain.job import Job
from emit.domain.model import JobStatus
from emit.domain.queue import ReadyQueue

NOW = 1_800_000_000.0
_seq = itertools.count(1)


def make_job(name: str = "a", priority: int = 0, seq: int | None = None, **extra: Any) -> Job:
    seq = next(_seq) if seq is None else seq
    return Job(
        id=f"job-{seq}",
        space_id="space",
        seq=seq,
        name=name,
        payload="null",
        status=JobStatus.PENDING,
        priority=priority,
        max_retries=3,
        timeout_seconds=30,
        created_at=NOW + seq,
        updated_at=NOW + seq,
        **extra,
    )


def filled(*jobs: Job) -> ReadyQueue:
    queue = ReadyQueue()
    for job in jobs:
        queue.push(job)
    return queue


def drain(queue: ReadyQueue, names: Any = None) -> list[Job]:
    out = []
    while (job := queue.pop(names)) is not None:
        out.append(job)
    return out


# ------------------------------------------------------------------------------- order


def test_an_empty_queue_has_nothing_to_give() -> None:
    queue = ReadyQueue()
    assert len(queue) == 0
    assert queue.peek() is None
    assert queue.pop() is None
    assert queue.pop(["a"]) is None


def test_higher_priority_is_dispatched_first() -> None:
    low, high, mid = make_job(priority=-5), make_job(priority=10), make_job(priority=0)
    assert drain(filled(low, high, mid)) == [high, mid, low]


def test_equal_priority_goes_oldest_first_whatever_the_push_order() -> None:
    jobs = [make_job(seq=s) for s in (105, 101, 104, 102, 103)]
    assert [j.seq for j in drain(filled(*jobs))] == [101, 102, 103, 104, 105]


def test_priority_beats_age() -> None:
    old = make_job(seq=1, priority=0)
    young = make_job(seq=1000, priority=1)
    assert drain(filled(old, young)) == [young, old]


def test_the_priority_bounds_order_correctly() -> None:
    jobs = [make_job(priority=p) for p in (0, -1000, 1000, -1, 1)]
    assert [j.priority for j in drain(filled(*jobs))] == [1000, 1, 0, -1, -1000]


def test_order_holds_across_names() -> None:
    a1 = make_job("a", priority=1, seq=10)
    b1 = make_job("b", priority=1, seq=5)
    c2 = make_job("c", priority=2, seq=20)
    a0 = make_job("a", priority=0, seq=1)
    assert drain(filled(a1, b1, c2, a0)) == [c2, b1, a1, a0]


def test_jobs_with_equal_priority_and_seq_come_out_in_push_order() -> None:
    # Entries must never fall through to comparing Job objects (they do not order).
    first, second = make_job(seq=7), make_job(seq=7)
    assert drain(filled(first, second)) == [first, second]


def test_a_requeued_job_with_a_stale_twin_entry_does_not_break_the_order() -> None:
    job, twin = make_job(seq=8), make_job(seq=8)
    queue = filled(job, twin)
    queue.discard(job)
    queue.push(job)
    assert drain(queue) == [twin, job]


def test_peek_shows_what_pop_will_give_without_taking_it() -> None:
    first, second = make_job(priority=1), make_job()
    queue = filled(second, first)
    assert queue.peek() is first
    assert queue.peek() is first
    assert len(queue) == 2
    assert queue.pop() is first
    assert queue.peek() is second


def test_many_names_and_priorities_come_out_in_priority_then_seq_order() -> None:
    rng = random.Random(1234)
    jobs = [make_job(f"name-{rng.randrange(40)}", priority=rng.randint(-3, 3)) for _ in range(600)]
    shuffled = jobs[:]
    rng.shuffle(shuffled)
    queue = filled(*shuffled)
    assert len(queue) == 600
    assert drain(queue) == sorted(jobs, key=lambda j: (-j.priority, j.seq))
    assert len(queue) == 0


# ------------------------------------------------------------------------------ filter


def test_the_name_filter_is_strict() -> None:
    a = make_job("a")
    b = make_job("b", priority=100)
    queue = filled(a, b)
    assert queue.peek(["a"]) is a
    assert queue.pop(["a"]) is a
    assert queue.pop(["a"]) is None  # b is never handed to a poll for a
    assert queue.pop(["b"]) is b


def test_a_filter_naming_an_unknown_job_name_gets_nothing() -> None:
    queue = filled(make_job("a"))
    assert queue.pop(["nope"]) is None
    assert queue.pop(frozenset()) is None
    assert len(queue) == 1


def test_a_prefix_of_a_name_does_not_match() -> None:
    queue = filled(make_job("email.send"))
    assert queue.pop(["email"]) is None
    assert queue.pop(["email.sen"]) is None


def test_no_filter_means_any_name() -> None:
    a, b = make_job("a"), make_job("b")
    assert set(drain(filled(a, b), None)) == {a, b}


def test_a_filter_of_several_names_takes_the_best_among_them_only() -> None:
    a = make_job("a", priority=1)
    b = make_job("b", priority=5)
    c = make_job("c", priority=9)
    queue = filled(a, b, c)
    assert queue.pop(frozenset({"a", "b"})) is b
    assert queue.pop({"a", "b"}) is a
    assert queue.pop(["a", "b"]) is None
    assert queue.pop() is c


def test_a_filtered_drain_over_many_names_keeps_order_and_leaves_the_rest() -> None:
    rng = random.Random(99)
    names = [f"n{i}" for i in range(50)]
    jobs = [make_job(rng.choice(names), priority=rng.randint(0, 2)) for _ in range(500)]
    queue = filled(*jobs)
    wanted = frozenset(names[:7])
    out = drain(queue, wanted)
    expected = sorted((j for j in jobs if j.name in wanted), key=lambda j: (-j.priority, j.seq))
    assert out == expected
    assert len(queue) == len(jobs) - len(expected)
    assert all(j.name not in wanted for j in drain(queue))


# --------------------------------------------------------------------- push and length


def test_pushing_a_queued_job_again_does_not_duplicate_it() -> None:
    job = make_job()
    queue = filled(job, job, job)
    assert len(queue) == 1
    assert drain(queue) == [job]


def test_pop_takes_the_job_out_of_the_queue() -> None:
    job = make_job()
    queue = filled(job)
    assert job.in_queue
    assert queue.pop() is job
    assert not job.in_queue
    assert len(queue) == 0
    assert queue.pop() is None


def test_a_popped_job_can_be_queued_again() -> None:
    job = make_job()
    queue = filled(job)
    queue.pop()
    queue.push(job)
    assert len(queue) == 1
    assert drain(queue) == [job]


# ---------------------------------------------------------------- discard (lazy removal)


def test_a_discarded_job_is_never_handed_out() -> None:
    a, b, c = make_job(priority=3), make_job(priority=2), make_job(priority=1)
    queue = filled(a, b, c)
    queue.discard(a)
    queue.discard(c)
    assert not a.in_queue
    assert len(queue) == 1
    assert queue.peek() is b
    assert drain(queue) == [b]


def test_discarding_a_job_not_in_the_queue_changes_nothing() -> None:
    queued, outsider = make_job(), make_job()
    queue = filled(queued)
    queue.discard(outsider)
    queue.discard(outsider)
    assert len(queue) == 1
    queue.discard(queued)
    queue.discard(queued)
    assert len(queue) == 0


def test_a_discarded_then_requeued_job_comes_out_once() -> None:
    job, other = make_job(), make_job()
    queue = filled(job, other)
    queue.discard(job)
    queue.push(job)
    queue.discard(job)
    queue.push(job)
    assert len(queue) == 2
    assert drain(queue) == [job, other]
    assert len(queue) == 0


def test_a_popped_job_is_not_handed_out_again_by_a_stale_entry() -> None:
    job = make_job()
    queue = filled(job)
    queue.discard(job)
    queue.push(job)
    assert queue.pop() is job
    assert queue.pop() is None  # the entry from the first push is stale


def test_stale_entries_are_dropped_when_they_reach_the_top() -> None:
    jobs = [make_job("x") for _ in range(100)]
    queue = filled(*jobs)
    for job in jobs:
        queue.discard(job)
    assert len(queue) == 0
    assert queue.peek(["x"]) is None
    assert "x" not in queue._heaps  # nothing kept for a name with no live job


def test_a_discarded_job_under_a_filter_does_not_hide_the_next_one() -> None:
    top, nxt = make_job("a", priority=9), make_job("a", priority=1)
    queue = filled(top, nxt, make_job("b", priority=100))
    queue.discard(top)
    assert queue.pop(["a"]) is nxt


def test_extend_gives_the_same_order_as_pushing_one_by_one() -> None:
    rng = random.Random(7)
    specs = [(rng.choice("abc"), rng.randint(-3, 3)) for _ in range(300)]
    pushed, extended = ReadyQueue(), ReadyQueue()
    for seq, (name, priority) in enumerate(specs, start=1):
        pushed.push(make_job(name, priority, seq=seq))
    extended.extend(reversed([make_job(n, p, seq=s) for s, (n, p) in enumerate(specs, start=1)]))
    assert len(pushed) == len(extended) == 300

    def drain(queue: ReadyQueue) -> list[tuple[str, int]]:
        order = []
        while (job := queue.pop()) is not None:
            order.append((job.name, job.seq))
        return order

    assert drain(pushed) == drain(extended)
