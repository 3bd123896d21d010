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
  3. replays them again in other forms, to show what the schema costs:
     - ``events a row each``: as before schema 3, every event a row of ``job_events``
       rather than text in its job's row;
     - ``... and only the status index``: as is, without the indexes that list a space's
       jobs unfiltered and by name (those lists would scan the space);
     - ``... and no listing indexes``: without the status index too (lists by status,
       and the recovery of live jobs, would scan);
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
from emit.store.schema import MIGRATIONS, migrate

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


def as_is(transactions: list[Transaction]) -> tuple[Schema, list[Transaction]]:
    return migrate, transactions


def rows_each(transactions: list[Transaction]) -> tuple[Schema, list[Transaction]]:
    """As before schema 3: no ``events`` column; every event a row of ``job_events``."""

    def schema(db: sqlite3.Connection) -> None:
        for script in MIGRATIONS[:2]:
            db.executescript(script)

    def split(job_id: str, text: str) -> list[tuple[Any, ...]]:
        return [
            (job_id, seq, kind, attempt, None if data is None else orjson.dumps(data).decode(), at)
            for seq, kind, attempt, data, at in orjson.loads(f"[{text[1:]}]")
        ] if text else []  # fmt: skip

    out: list[Transaction] = []
    for transaction in transactions:
        steps: Transaction = []
        events: list[tuple[Any, ...]] = []
        for sql, rows in transaction:
            if sql.startswith("INSERT INTO jobs"):
                sql = sql.replace(", events)", ")").replace(", ?)", ")", 1)
                events += [e for row in rows for e in split(row[0], row[-1])]
                rows = [row[:-1] for row in rows]
            elif sql.startswith("UPDATE jobs SET"):
                sql = sql.replace(", events = events || ?", "")
                events += [e for row in rows for e in split(row[-1], row[-2])]
                rows = [(*row[:-2], row[-1]) for row in rows]
            elif sql.startswith("INSERT INTO job_events"):
                events += rows
                continue
            steps.append((sql, rows))
        if events:
            steps.append(("INSERT INTO job_events VALUES (?, ?, ?, ?, ?, ?)", events))
        out.append(steps)
    return schema, out


def _dropping(*indexes: str) -> Callable[[list[Transaction]], tuple[Schema, list[Transaction]]]:
    def form(transactions: list[Transaction]) -> tuple[Schema, list[Transaction]]:
        def schema(db: sqlite3.Connection) -> None:
            migrate(db)
            for index in indexes:
                db.execute(f"DROP INDEX {index}")

        return schema, transactions

    return form


BARE = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT, payload TEXT, status TEXT, "
    "lease_id TEXT, deadline REAL, result TEXT, updated_at REAL, events TEXT)"
)


def bare(transactions: list[Transaction]) -> tuple[Schema, list[Transaction]]:
    """One narrow row a job: insert, then each update sets 5 columns and appends events."""
    numbers: dict[str, int] = {}
    out: list[Transaction] = []
    for transaction in transactions:
        steps: Transaction = []
        for sql, rows in transaction:
            if sql.startswith("INSERT INTO jobs"):  # JOB_COLUMNS, then events
                for row in rows:
                    numbers[row[0]] = len(numbers) + 1
                steps.append((
                    "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(numbers[r[0]], r[3], r[4], r[5], r[18], r[19], r[16], r[23], r[27]) for r in rows],
                ))  # fmt: skip
            elif sql.startswith("UPDATE jobs SET"):
                # STATE_COLUMNS, events, id: status 0, result 4, lease 6, deadline 7,
                # updated_at 10, events 14, id 15
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
    "events a row each (schema 2)": rows_each,
    "emit's writer, as is": as_is,
    "... and only the status index": _dropping("jobs_space", "jobs_space_name"),
    "... and no listing indexes": _dropping("jobs_space", "jobs_space_name", "jobs_space_status"),
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
    parser = argparse.ArgumentParser(description=__doc__.split(".\n")[0] + ".")
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
