"""Benchmark of the stores alone, run by hand from the project root:
``.venv/bin/python -m bench.stores`` (``--help`` for the knobs).

One process, no engine: the rows a job's lifecycle writes (create with its event,
delivered, started, completed with a log line: 4 job rows and a log row a job), in
transactions of ``--group`` writes each, as the store writer's group commit makes them
under load, and in transactions of one write each (the commit round trip alone).
SQLite (synchronous=FULL, a file in a temporary directory) against PostgreSQL (``--url``,
or a throwaway local cluster with fsync on, so both wait for the disk), each store's
commits one after the other as the writer sends them. Prints commits/s, rows/s, jobs/s
and this process's CPU per job (SQLite's writer process and the PostgreSQL server are
other processes: this is what the event loop's process spends) for each store and group
size.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import trio

from emit.domain import lifecycle
from emit.domain.job import Job
from emit.domain.model import Event, JobStatus, LogLevel
from emit.domain.records import LogLine, Space
from emit.ids import new_id
from emit.store.base import Store
from emit.store.postgres import PostgresStore
from emit.store.records import Changes, event_record, job_row, log_row, state_row
from emit.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tests.postgres import Cluster

SPACE = Space("01BENCHSPACE00000000000000", "bench", "emit_pub_bench", 0.0, {})
PAYLOAD = '{"to":"someone@example.com","template":"welcome","vars":{"n":%d,"pad":"%s"}}'


def _inline(job: Job, events: list[Event]) -> str:
    records = [event_record(job.id, e) for e in events]
    return "".join(r for r in records if isinstance(r, str))


def lifecycle_writes(jobs: int, now: float) -> list[list[Changes]]:
    """Per stage (created, delivered, started, completed), one `Changes` a job."""
    made = []
    for n in range(jobs):
        job = Job(
            id=new_id(now), space_id=SPACE.id, seq=n + 1, name="email",
            payload=PAYLOAD % (n, "x" * 100), status=JobStatus.PENDING, priority=0,
            max_retries=3, timeout_seconds=300, created_at=now, updated_at=now,
        )  # fmt: skip
        made.append(job)
    stages: list[list[Changes]] = [[], [], [], []]
    for job in made:
        stages[0].append(Changes(inserts=[job_row(job, _inline(job, lifecycle.created(job, now)))]))
    for job in made:
        events = lifecycle.deliver(job, now, "LEASE" + job.id)
        stages[1].append(Changes(updates=[state_row(job, _inline(job, events))]))
    for job in made:
        events = lifecycle.ack(job, now, job.lease_id)
        stages[2].append(Changes(updates=[state_row(job, _inline(job, events))]))
    for job in made:
        job.log_seq += 1
        line = LogLine(job.log_seq, LogLevel.INFO, "sent", now, None)
        events = lifecycle.complete(job, now, "ok", {"id": 1}, job.lease_id)
        stages[3].append(
            Changes(updates=[state_row(job, _inline(job, events))], logs=[log_row(job.id, line)])
        )
    return stages


async def measure(store: Store, jobs: int, group: int) -> tuple[float, float, int, int]:
    """Seconds, CPU seconds of this process (its threads included), commits and rows to
    write ``jobs`` lifecycles ``group`` writes a commit."""
    stages = lifecycle_writes(jobs, time.time())
    commits = rows = 0
    began, cpu = time.perf_counter(), time.process_time()
    for stage in stages:
        for start in range(0, len(stage), group):
            batches = stage[start : start + group]
            await store.commit(batches)
            commits += 1
            rows += sum(len(b.inserts) + len(b.updates) + len(b.logs) for b in batches)
    return time.perf_counter() - began, time.process_time() - cpu, commits, rows


@contextlib.contextmanager
def durable_postgres() -> Iterator[Cluster]:
    """A throwaway cluster (the tests' own), restarted with fsync and full page writes
    on: the tests start it with ``-c fsync=off`` on the command line, which outranks
    ``ALTER SYSTEM``, so the server is started again without those options."""
    from tests.postgres import running_cluster

    with running_cluster() as cluster:
        cluster.stop()
        options = (
            f"-p {cluster.port} -k {cluster.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c full_page_writes=on -c max_connections=300"
        )
        cluster._run("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.root / "log"), "-w",
                     "-t", "60", "-o", options, "start")  # fmt: skip
        with psycopg.connect(cluster.url(), autocommit=True) as db:
            shown = [
                db.execute(f"SHOW {name}").fetchone()
                for name in ("fsync", "full_page_writes", "synchronous_commit")
            ]
        if any(row is None or row[0] != "on" for row in shown):
            raise RuntimeError(f"fsync, full_page_writes, synchronous_commit: {shown}")
        yield cluster


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """A database on a throwaway durable cluster (`durable_postgres`)."""
    with durable_postgres() as cluster:
        yield cluster.create_database()


async def run(url: str, jobs: int, groups: list[int], directory: Path) -> None:
    makers: list[tuple[str, Callable[[int], Store]]] = [
        ("sqlite", lambda n: SQLiteStore(directory / f"bench{n}.db")),
        ("postgresql", lambda n: PostgresStore(url)),
    ]
    print(
        f"{'store':<11} {'group':>5} {'commits/s':>10} {'rows/s':>9} {'jobs/s':>8} {'cpu µs/job':>11}"
    )
    for group in groups:
        count = jobs if group > 1 else max(1, jobs // 10)
        for n, (name, make) in enumerate(makers):
            store = make(group * 10 + n)
            await store.open()
            await store.commit([Changes(spaces=[SPACE])])
            seconds, cpu, commits, rows = await measure(store, count, group)
            await store.close()
            print(
                f"{name:<11} {group:>5} {commits / seconds:>10,.0f} {rows / seconds:>9,.0f} "
                f"{count / seconds:>8,.0f} {cpu / count * 1e6:>11,.0f}"
            )
            if isinstance(store, PostgresStore):  # the next round starts empty too
                with psycopg.connect(url, autocommit=True) as db:
                    db.execute("TRUNCATE jobs, job_logs, job_events, spaces")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--url", help="a PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--group", type=int, action="append", help="writes a commit (1, 100)")
    args = parser.parse_args()
    groups = args.group or [1, 100]
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(local_postgres())
        trio.run(run, url, args.jobs, groups, Path(directory))


if __name__ == "__main__":
    main()
