"""How fast the durable lifecycle could go at most in this design, on this machine: the
ceiling that the store's writer alone puts on it, beside beanstalkd in the same run.
Run by hand from the project root: ``.venv/bin/python -m bench.ceiling``.

Issue 3 asks for emit >= 3x beanstalkd (default fsync) on the lifecycle of
``bench.engine``. Every job's changes pass through one SQLite writer, so the writer's
own time per job bounds the engine's rate, however fast the event loop were. This bench:
  1. runs the engine's lifecycle once (``bench.engine.emit_lifecycle``, synchronous=FULL)
     and keeps every transaction it sends to the writer process;
  2. replays those transactions into a fresh database, in a bare loop that does what the
     writer process does (decode the message, BEGIN IMMEDIATE, ``executemany`` each step,
     COMMIT), with nothing else running: the writer with no waiting at all;
  3. replays them again in three cheaper forms, to show what the schema costs:
     - ``events in the job row``: each job's events appended to a text column of its row
       instead of a row each in ``job_events`` (still everything the spec asks to keep);
     - ``... and only the status index``: that, without the indexes that list a space's
       jobs unfiltered and by name (those lists would scan the space);
     - ``... and no listing indexes``: without the status index too;
     - ``bare table``: one 9-column row a job with an integer key, one insert and two
       updates, no index: what Python's sqlite3 and SQLite cost at the very least;
  4. runs beanstalkd (binlog on, default fsync, greenstalk put -> reserve -> delete from
     --workers processes), as ``bench.engine`` does.
Each replay reports CPU per job (the ceiling if fsync cost nothing) and wall time per job
with the run's own grouping and fsyncs (the ceiling of one writer). Rounds interleave;
the best of each is kept.
"""

from __future__ import annotations

import argparse
import gc
import marshal
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import trio

import emit
import emit.store.sqlite as sqlite_store
from bench.engine import LIFECYCLE_TARGET, beanstalkd_lifecycle, emit_lifecycle
from bench.proc import stolen_seconds
from emit.store.schema import migrate

Step = tuple[str, list[tuple[Any, ...]]]
Transaction = list[Step]
Schema = Callable[[sqlite3.Connection], object]


def capture(data: Path, jobs: int, workers: int, batch: int) -> tuple[list[Transaction], Any]:
    """Run the lifecycle once; every transaction it committed, in order, and its rate."""
    captured: list[Transaction] = []
    steps = sqlite_store._steps

    def keep(batches: Any) -> list[Step]:
        made = steps(batches)
        captured.append(made)
        return made

    sqlite_store._steps = keep
    try:
        rate = trio.run(emit_lifecycle, data, jobs, workers, batch, "FULL")
    finally:
        sqlite_store._steps = steps
    return captured, rate


# ---------------------------------------------------------------- the replayed forms


def as_is(
    transactions: list[Transaction],
) -> tuple[Schema, list[Transaction]]:
    return migrate, transactions


def events_in_row(
    transactions: list[Transaction],
) -> tuple[Schema, list[Transaction]]:
    """Each job's events of a transaction go into its insert or update, as text appended
    to an ``events`` column; no ``job_events`` rows."""

    def schema(db: sqlite3.Connection) -> None:
        migrate(db)
        db.execute("ALTER TABLE jobs ADD COLUMN events TEXT NOT NULL DEFAULT ''")

    out: list[Transaction] = []
    for transaction in transactions:
        events: dict[str, list[str]] = {}
        for sql, rows in transaction:
            if sql.startswith("INSERT INTO job_events"):
                for row in rows:
                    events.setdefault(row[0], []).append(orjson.dumps(row[1:]).decode())
        steps: Transaction = []
        for sql, rows in transaction:
            if sql.startswith("INSERT INTO job_events"):
                continue
            if sql.startswith("INSERT INTO jobs"):
                sql = sql.replace("completed_at)", "completed_at, events)").replace("?)", "?, ?)")
                rows = [(*row, ",".join(events.pop(row[0], ()))) for row in rows]
            elif sql.startswith("UPDATE jobs SET"):
                sql = sql.replace(" WHERE id", ", events = events || ? WHERE id")
                rows = [
                    (*row[:-1], "," + ",".join(events.pop(row[-1], ())), row[-1]) for row in rows
                ]
            steps.append((sql, rows))
        if events:
            raise RuntimeError(f"events of {len(events)} jobs neither inserted nor updated")
        out.append(steps)
    return schema, out


def no_listing_indexes(
    transactions: list[Transaction],
) -> tuple[Schema, list[Transaction]]:
    schema, out = events_in_row(transactions)

    def without(db: sqlite3.Connection) -> None:
        schema(db)
        for index in ("jobs_space", "jobs_space_status", "jobs_space_name"):
            db.execute(f"DROP INDEX {index}")

    return without, out


def status_index_only(
    transactions: list[Transaction],
) -> tuple[Schema, list[Transaction]]:
    schema, out = events_in_row(transactions)

    def one(db: sqlite3.Connection) -> None:
        schema(db)
        for index in ("jobs_space", "jobs_space_name"):
            db.execute(f"DROP INDEX {index}")

    return one, out


BARE = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT, payload TEXT, status TEXT, "
    "lease_id TEXT, deadline REAL, result TEXT, updated_at REAL, events TEXT)"
)


def bare(
    transactions: list[Transaction],
) -> tuple[Schema, list[Transaction]]:
    """One narrow row a job: insert, then each update sets 5 columns and appends events."""
    numbers: dict[str, int] = {}
    _, folded = events_in_row(transactions)
    out: list[Transaction] = []
    for transaction in folded:
        steps: Transaction = []
        for sql, rows in transaction:
            if sql.startswith("INSERT INTO jobs"):
                for row in rows:
                    numbers[row[0]] = len(numbers) + 1
                steps.append((
                    "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(numbers[r[0]], r[3], r[4], r[5], r[18], r[19], r[16], r[23], r[27]) for r in rows],
                ))  # fmt: skip
            elif sql.startswith("UPDATE jobs SET"):
                # STATE_COLUMNS then events, then the id: status 0, result 4, lease 6,
                # deadline 7, updated_at 10, events 14, id 15
                steps.append((
                    "UPDATE jobs SET status = ?, result = ?, lease_id = ?, deadline = ?, "
                    "updated_at = ?, events = events || ? WHERE id = ?",
                    [(r[0], r[4], r[6], r[7], r[10], r[14], numbers[r[15]]) for r in rows],
                ))  # fmt: skip
        out.append(steps)

    def schema(db: sqlite3.Connection) -> None:
        db.execute(BARE)

    return schema, out


FORMS = {
    "emit's writer, as is": as_is,
    "events in the job row": events_in_row,
    "... and only the status index": status_index_only,
    "... and no listing indexes": no_listing_indexes,
    "bare table": bare,
}


def replay(path: Path, schema: Schema, bodies: list[bytes]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the writer process's loop over ``bodies``."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sqlite3.register_adapter(type(None), {}.get)  # type: ignore[arg-type]  # as the writer does
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    schema(db)
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    for body in bodies:  # the loop of emit/store/_writer_process.py
        steps = marshal.loads(body)
        db.execute("BEGIN IMMEDIATE")
        for sql, rows in steps:
            db.executemany(sql, rows)
        db.execute("COMMIT")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db.close()
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--beanstalkd", default=shutil.which("beanstalkd") or "/usr/bin/beanstalkd")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    emit.tune_gc()
    base = Path(tempfile.mkdtemp(prefix="emit-ceiling-", dir=args.dir))
    print(
        f"emit {emit.__version__}, SQLite {sqlite3.sqlite_version}, CPython "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    try:
        trio.run(emit_lifecycle, base / "warm", 10_000, args.workers, args.batch, "FULL")
        transactions, rate = capture(base / "captured", args.jobs, args.workers, args.batch)
        forms = {name: make(transactions) for name, make in FORMS.items()}
        bodies = {
            name: (schema, [marshal.dumps(t) for t in made])
            for name, (schema, made) in forms.items()
        }
        stolen, began = stolen_seconds(), time.perf_counter()
        best: dict[str, tuple[float, float]] = {}
        peers: list[float] = []
        for _ in range(args.rounds):
            peers.append(
                beanstalkd_lifecycle(args.beanstalkd, [], args.jobs, args.workers).jobs_per_s
            )
            for name, (schema, encoded) in bodies.items():
                cpu, wall = replay(base / "replay.db", schema, encoded)
                old = best.get(name, (cpu, wall))
                best[name] = (min(cpu, old[0]), min(wall, old[1]))
        share = (stolen_seconds() - stolen) / (time.perf_counter() - began) / (os.cpu_count() or 1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    peer = max(peers)
    need = 1e6 / (LIFECYCLE_TARGET * peer)
    print(
        f"\nlifecycle of {args.jobs:,} jobs, {args.workers} workers: {len(transactions):,} "
        f"transactions; CPU stolen by the host meanwhile: {share:.0%}"
    )
    print(
        f"  emit as run (FULL): {rate.jobs_per_s:,.0f} jobs/s; event loop "
        f"{rate.cpu_us_per_job - rate.writer_cpu_us_per_job:.1f} us CPU a job, writer process "
        f"{rate.writer_cpu_us_per_job:.1f}"
    )
    print(
        f"  beanstalkd, binlog, default fsync: {peer:,.0f} jobs/s (runs: "
        f"{', '.join(f'{p:,.0f}' for p in peers)}); {LIFECYCLE_TARGET:g}x it is "
        f"{LIFECYCLE_TARGET * peer:,.0f} jobs/s, {need:.1f} us a job"
    )
    print(f"\n  the writer's loop alone, best of {args.rounds}:")
    print(
        f"  {'':30} {'CPU us/job':>10} {'ceiling':>9} {'wall us/job':>11} {'ceiling':>9}  vs beanstalkd"
    )
    for name, (cpu, wall) in best.items():
        cpu_us, wall_us = cpu / args.jobs * 1e6, wall / args.jobs * 1e6
        print(
            f"  {name:30} {cpu_us:10.1f} {1e6 / cpu_us:9,.0f} {wall_us:11.1f} {1e6 / wall_us:9,.0f}"
            f"  {1e6 / cpu_us / peer:.2f}x / {1e6 / wall_us / peer:.2f}x"
        )


if __name__ == "__main__":
    main()
