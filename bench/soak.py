"""Soak test of a real server, run by hand from the project root:
``.venv/bin/python -m bench.soak --cycles 100`` (``--help`` for the knobs).

A real ``emit serve`` (a child process, on a data directory of its own and a loopback
port, with ``--allow-private-callbacks``) runs under mixed load over plain HTTP:
producer threads create jobs (single and in batches; some with a ``callbackUrl`` to a
receiver this process runs on loopback, which records every delivery; short
``timeoutSeconds``), worker threads poll with ack, report progress, and then complete
(singly or in a batch), fail, or walk away so the lease times out. Every cycle the
server is killed with SIGKILL at a seeded random moment — after a chosen number of
acknowledged calls, from "at once, while it loads" to "hundreds of calls in" — and
started again on the same data directory. Every 2xx create (job id) and every 2xx
complete (job id and result) is recorded as it is answered.

After the last cycle the server is started once more, without load, until every lease
has run out and every due webhook has been delivered (bounded by ``--drain``), and is
then stopped cleanly. The store is read read-only, and the run fails (exit 1) unless:

- every acknowledged create exists;
- every acknowledged complete is completed, with its result;
- no job was ever held by two live leases (each job's history replayed), and no
  history has a gap;
- every due webhook (a final job with a callbackUrl) reached the receiver at least once,
  and the receiver got none for a state the job is not in (an outbox row is sent only
  once its change is durable);
- the server's counts by status equal its jobs' statuses;
- no cycle's load went unanswered for ``--cycle-seconds`` (a server that stops
  answering under load fails), no answer was a 500, no server left a process behind
  when killed, and SQLite's integrity check passes.

It prints a summary (cycles, creates and completes acknowledged, lost, double leases,
webhooks due and delivered, time); on a violation, also the seed and the kept data
directory (with each incarnation's log) to look into. Bounded in count and time;
loopback only; it ends every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.client import ROOT, Served, session_ends
from emit.store.records import EventRow, job_events

LEASE_ENDS = frozenset({"delivery_timeout", "retried", "completed", "dead", "killed"})
FINAL = frozenset({"completed", "dead", "killed"})
WORKING = frozenset({"delivered", "running"})


# ------------------------------------------------------------------------ records


@dataclass
class Ledger:
    """What the server acknowledged with a 2xx, recorded by the load threads as it is
    answered (appends and increments under one lock)."""

    created: set[str] = field(default_factory=set)
    completed: dict[str, Any] = field(default_factory=dict)
    """Job id → the result the acknowledged complete carried."""
    acknowledged: int = 0
    """Acknowledged calls of every kind: what a kill moment is counted in."""
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, created: Iterable[str] = (), completed: dict[str, Any] | None = None) -> None:
        with self.changed:
            self.created.update(created)
            if completed:
                self.completed.update(completed)
            self.acknowledged += 1
            self.changed.notify_all()

    def count(self) -> None:
        with self.changed:
            self.acknowledged += 1
            self.changed.notify_all()

    def wait_for(self, target: int, timeout: float) -> bool:
        """Wait until ``target`` calls have been acknowledged, at most ``timeout`` s."""
        with self.changed:
            return self.changed.wait_for(lambda: self.acknowledged >= target, timeout)


class Receiver:
    """The webhook receiver: a threaded HTTP server on loopback that answers 200 to
    every POST and records ``(jobId, status)`` of each whole body."""

    def __init__(self) -> None:
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.cut_off = 0
        """Requests whose body never fully arrived (the server was killed sending it)."""
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: no delivery
                    with receiver.lock:
                        receiver.cut_off += 1
                    return
                try:
                    sent = json.loads(body)
                    key = (str(sent["jobId"]), str(sent["status"]))
                except (ValueError, KeyError, TypeError):
                    key = ("?", body[:80].decode(errors="replace"))
                with receiver.lock:
                    receiver.deliveries[key] += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: thousands of deliveries

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> set[tuple[str, str]]:
        with self.lock:
            return set(self.deliveries)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------ the server


def command(data: Path, extra: list[str]) -> list[str]:
    serve = ["serve", "--data", str(data), "--port", "0", "--rate-limit", "1000000"]
    return [sys.executable, "-m", "emit", *serve, "--allow-private-callbacks", *extra]


def environment() -> dict[str, str]:
    """This process's environment but for an admin key: the server makes its own."""
    return {name: value for name, value in os.environ.items() if name != "EMIT_ADMIN_KEY"}


def interrupted_start(data: Path, log: Path, extra: list[str], after: float) -> bool:
    """Start a server and SIGKILL it ``after`` seconds in, most likely before it serves
    (opening the store, loading the space, the first expiries): True if nothing of it
    outlived it."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command(data, extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=environment(),
            start_new_session=True,
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=after)
        proc.kill()
        proc.wait(timeout=30)
        return session_ends(proc.pid, within=10.0)


def started(line: str) -> bool:
    """The list of spaces ends a start, first or later."""
    return line.startswith("  space ") and not line.startswith("  space id")


class Server(Served):
    """One incarnation of ``emit serve`` on the data directory, in a session of its own
    (so that a writer process it leaves behind can be found and ended); its output is
    written to ``log`` when it ends."""

    def __init__(self, data: Path, log: Path, extra: list[str]) -> None:
        self.log = log
        try:
            super().__init__(command(data, extra), started, env=environment(), session=True)
        except RuntimeError as error:
            log.write_text(str(error))
            raise RuntimeError(f"emit serve did not start (see {log}): {error}") from None
        self.url = self.lines[0].split()[3]

    def kill(self) -> bool:
        """SIGKILL the server; True if nothing of its session outlived it (its writer
        process must follow it within seconds). Ends whatever did, either way."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        alone = session_ends(self.proc.pid, within=10.0)
        self._close()
        return alone

    def stop(self) -> None:
        """SIGTERM: a clean stop (``proc.returncode`` is its exit status)."""
        super().stop()
        self._close()

    def _close(self) -> None:
        self._drain.join(timeout=10)
        self.log.write_text("\n".join([*self.lines, *self.rest, ""]))


@dataclass(frozen=True)
class Keys:
    space: str
    producer: dict[str, str]
    worker: dict[str, str]


# ------------------------------------------------------------------------ the load


class Load:
    """One cycle's producers and workers, against one incarnation. Every call whose
    answer did not arrive (the server died under it) is simply not recorded."""

    def __init__(
        self, url: str, keys: Keys, ledger: Ledger, receiver: Receiver, args: Any, seed: int
    ) -> None:
        self.url = url
        self.keys = keys
        self.ledger = ledger
        self.callback_url = receiver.url
        self.args = args
        self.seed = seed
        self.stopping = threading.Event()
        self.errors: Counter[str] = Counter()
        self.threads = [
            threading.Thread(target=self._guarded, args=(self._produce, i), daemon=True)
            for i in range(args.producers)
        ] + [
            threading.Thread(target=self._guarded, args=(self._work, i), daemon=True)
            for i in range(args.workers)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
            if thread.is_alive():
                raise RuntimeError("a load thread did not stop")

    def _guarded(
        self, body: Callable[[httpx.Client, random.Random, int], None], index: int
    ) -> None:
        rng = random.Random(f"{self.seed}-{body.__name__}-{index}")
        hooks = {"response": [self._note]}
        with httpx.Client(base_url=self.url, timeout=15, event_hooks=hooks) as http:
            while not self.stopping.is_set():
                try:
                    body(http, rng, index)
                except httpx.HTTPError as error:
                    # Mostly the server dying under the call; else worth a count.
                    self.errors[type(error).__name__] += 1
                    self.stopping.wait(0.02)

    def _note(self, response: httpx.Response) -> None:
        """Count every server error by route; a 500 is a bug whatever the load."""
        if response.status_code >= 500:
            route = response.request.url.path.rsplit("/", 1)[-1]
            self.errors[f"{route} {response.status_code}"] += 1

    def _job(self, rng: random.Random, index: int, n: int) -> dict[str, Any]:
        job: dict[str, Any] = {
            "name": "soak",
            "payload": {"producer": index, "n": n},
            "timeoutSeconds": rng.randint(1, 3),
            "maxRetries": rng.randint(0, 2),
        }
        if rng.random() < self.args.callback_share:
            job["callbackUrl"] = self.callback_url
        return job

    def _produce(self, http: httpx.Client, rng: random.Random, index: int) -> None:
        jobs = f"/api/v1/spaces/{self.keys.space}/jobs"
        if rng.random() < 0.2:  # now and then, hold off while the backlog is long
            stats = http.get(f"/api/v1/spaces/{self.keys.space}/stats", headers=self.keys.producer)
            if stats.status_code == 200 and stats.json()["counts"]["pending"] > self.args.backlog:
                self.stopping.wait(0.2)
                return
        n = rng.randrange(1 << 30)
        if rng.random() < 0.5:
            made = http.post(jobs, json=self._job(rng, index, n), headers=self.keys.producer)
            if made.status_code == 201:
                self.ledger.add(created=[made.json()["id"]])
        else:
            batch = [self._job(rng, index, n + i) for i in range(rng.randint(2, 8))]
            made = http.post(jobs, json=batch, headers=self.keys.producer)
            if made.status_code == 201:
                self.ledger.add(created=[job["id"] for job in made.json()])

    def _work(self, http: httpx.Client, rng: random.Random, index: int) -> None:
        headers = self.keys.worker
        polled = http.post(
            f"/api/v1/spaces/{self.keys.space}/jobs/poll",
            json={"count": rng.randint(1, 5), "wait": 1, "ack": True},
            headers=headers,
        )
        if polled.status_code != 200:
            return
        batch: dict[str, Any] = {}
        for job in polled.json()["jobs"]:
            job_id, lease = job["id"], job["leaseId"]
            fenced = {**headers, "x-emit-lease": lease}
            done = rng.random()
            if done < self.args.abandon_share:
                continue  # walk away: the run deadline fails this attempt
            progress = http.post(
                f"/api/v1/jobs/{job_id}/progress",
                json={"percent": 50, "message": "half way"},
                headers=fenced,
            )
            if progress.status_code == 200:
                self.ledger.count()
            if done < self.args.abandon_share + self.args.fail_share:
                failed = http.post(
                    f"/api/v1/jobs/{job_id}/fail", json={"error": "soak"}, headers=fenced
                )
                if failed.status_code == 200:
                    self.ledger.count()
                continue
            result = {"job": job_id, "worker": index, "n": rng.randrange(1 << 30)}
            if rng.random() < 0.5:
                batch[job_id] = (lease, result)
                continue
            completed = http.post(
                f"/api/v1/jobs/{job_id}/complete",
                json={"result": result, "leaseId": lease},
                headers=headers,
            )
            if completed.status_code == 200:
                self.ledger.add(completed={job_id: result})
        if batch:
            items = [{"id": i, "result": r, "leaseId": lease} for i, (lease, r) in batch.items()]
            answer = http.post(
                f"/api/v1/spaces/{self.keys.space}/jobs/complete",
                json={"jobs": items},
                headers=headers,
            )
            if answer.status_code == 200:
                done_ids = [r["id"] for r in answer.json()["results"] if r["status"] == 200]
                self.ledger.add(completed={i: batch[i][1] for i in done_ids})


# ------------------------------------------------------------------------ checking


@dataclass
class Stored:
    status: str
    result: Any
    callback: bool
    events: list[tuple[int, str]]


def read_store(path: Path) -> dict[str, Stored]:
    """Every job with its history, from the SQLite file, read-only, in one read."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("BEGIN")
        rows: dict[str, list[EventRow]] = defaultdict(list)
        for row in db.execute("SELECT * FROM job_events ORDER BY job_id, seq"):
            rows[row[0]].append(row)
        jobs = {}
        for job_id, status, result, callback, text in db.execute(
            "SELECT id, status, result, callback_url, events FROM jobs"
        ):
            history = job_events(text or "", rows.get(job_id, []))
            jobs[job_id] = Stored(
                status,
                None if result is None else json.loads(result),
                callback is not None,
                [(event.seq, event.type.value) for event in history],
            )
        db.execute("COMMIT")
        return jobs
    finally:
        db.close()


def double_leased(events: list[tuple[int, str]]) -> bool:
    """Replay a history: a delivery while a lease is live is a second live lease."""
    leased = False
    for _, kind in events:
        if kind == "delivered":
            if leased:
                return True
            leased = True
        elif kind in LEASE_ENDS:
            leased = False
    return False


@dataclass
class Verdict:
    lost_creates: list[str]
    lost_completes: list[str]
    double_leases: list[str]
    gaps: list[str]
    due: set[tuple[str, str]]
    undelivered: list[tuple[str, str]]
    phantom: list[tuple[str, str]]

    @property
    def violations(self) -> int:
        return sum(
            len(found)
            for found in (
                self.lost_creates,
                self.lost_completes,
                self.double_leases,
                self.gaps,
                self.undelivered,
                self.phantom,
            )
        )


def judge(jobs: dict[str, Stored], ledger: Ledger, delivered: set[tuple[str, str]]) -> Verdict:
    lost_completes = []
    for job_id, result in ledger.completed.items():
        job = jobs.get(job_id)
        if job is None or job.status != "completed" or job.result != result:
            lost_completes.append(job_id)
    due = {
        (job_id, job.status) for job_id, job in jobs.items() if job.callback and job.status in FINAL
    }
    return Verdict(
        lost_creates=sorted(ledger.created - jobs.keys()),
        lost_completes=sorted(lost_completes),
        double_leases=sorted(job_id for job_id, job in jobs.items() if double_leased(job.events)),
        gaps=sorted(
            job_id
            for job_id, job in jobs.items()
            if [seq for seq, _ in job.events] != list(range(1, len(job.events) + 1))
        ),
        due=due,
        undelivered=sorted(due - delivered),
        phantom=sorted(
            (job_id, status)
            for job_id, status in delivered
            if job_id not in jobs or jobs[job_id].status != status
        ),
    )


# ------------------------------------------------------------------------ the run


def kill_point(rng: random.Random) -> int:
    """How many acknowledged calls into a cycle the kill comes: now and then at once
    (the server just loaded), often early (recovery's own work in flight), else later."""
    roll = rng.random()
    if roll < 0.1:
        return 0
    if roll < 0.4:
        return rng.randint(1, 40)
    return rng.randint(40, 600)


def settle(server: Server, keys: Keys, store: Path, receiver: Receiver, seconds: float) -> bool:
    """Wait (bounded) until no job holds a lease or waits out a backoff, and every due
    webhook has arrived; True if that happened in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs = read_store(store)
        busy = any(job.status in WORKING or job.status == "scheduled" for job in jobs.values())
        due = {(i, job.status) for i, job in jobs.items() if job.callback and job.status in FINAL}
        if not busy and due <= receiver.delivered():
            return True
        time.sleep(0.25)
    return False


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    rng = random.Random(args.seed)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="emit-soak-"))
    data, logs = work / "data", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    store = data / "emit.db"
    extra = ["--callback-first-delay", "0.2", "--callback-factor", "2", "--callback-tries", "12"]
    ledger = Ledger()
    receiver = Receiver()
    problems: list[str] = []
    start_kills = 0
    errors: Counter[str] = Counter()
    server: Server | None = None
    try:
        server = Server(data, logs / "1.log", extra)
        keys = Keys(
            server.value("space id"),
            {"x-api-key": server.value("producer key")},
            {"x-api-key": server.value("worker key")},
        )
        for cycle in range(1, args.cycles + 1):
            if cycle > 1:
                if rng.random() < args.start_kills:
                    after = rng.uniform(0.05, 1.5)
                    log = logs / f"{cycle}-start.log"
                    if not interrupted_start(data, log, extra, after):
                        problems.append(
                            f"cycle {cycle}: a process of the server killed while "
                            f"starting outlived it"
                        )
                    start_kills += 1
                server = Server(data, logs / f"{cycle}.log", extra)
            target = kill_point(rng)
            load = Load(server.url, keys, ledger, receiver, args, seed=args.seed * 1000 + cycle)
            with ledger.changed:
                start = ledger.acknowledged
            load.start()
            if not ledger.wait_for(start + target, timeout=args.cycle_seconds) and (
                ledger.acknowledged == start
            ):
                problems.append(
                    f"cycle {cycle}: the server acknowledged nothing in "
                    f"{args.cycle_seconds:g} s of load (log {server.log.name})"
                )
            load.stopping.set()  # before the kill: the errors that follow are expected
            if not server.kill():
                problems.append(f"cycle {cycle}: a process of the killed server outlived it")
            load.stop()
            errors.update(load.errors)
            if any(kind.endswith(" 500") for kind in load.errors):
                problems.append(f"cycle {cycle}: answers of 500 (log {server.log.name})")
            if not args.quiet:
                print(
                    f"cycle {cycle:>3}: killed after {ledger.acknowledged - start:>4} "
                    f"acknowledged calls (aimed at {target}); {len(ledger.created)} creates, "
                    f"{len(ledger.completed)} completes so far",
                    flush=True,
                )
        server = Server(data, logs / "final.log", extra)
        if not settle(server, keys, store, receiver, args.drain):
            problems.append(
                f"leases or webhooks still pending {args.drain:g} s after the last start"
            )
        stats = httpx.get(
            f"{server.url}/api/v1/spaces/{keys.space}/stats", headers=keys.producer, timeout=30
        )
        before_stop = read_store(store)
        counted = Counter(job.status for job in before_stop.values())
        reported = {status: n for status, n in stats.json()["counts"].items() if n}
        if reported != dict(counted):
            problems.append(f"the server counts {reported}, its jobs are {dict(counted)}")
        server.stop()
        code = server.proc.returncode
        server = None
        if code != 0:
            problems.append(f"the last server exited {code} on SIGTERM")
        jobs = read_store(store)
        verdict = judge(jobs, ledger, receiver.delivered())
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"SQLite integrity check: {integrity}")
    except RuntimeError as error:  # a server that would not start again: stop here
        print(f"FAILED: {error}\nreproduce with --seed {args.seed}; data and logs kept in {work}")
        return 1
    finally:
        if server is not None:
            server.kill()
        receiver.close()
    seconds = time.monotonic() - began
    report(args, ledger, receiver, jobs, verdict, problems, errors, seconds, start_kills)
    failed = verdict.violations > 0 or bool(problems)
    if failed:
        print(
            f"FAILED: reproduce with --seed {args.seed} --cycles {args.cycles}; "
            f"data and logs kept in {work}"
        )
    elif not args.dir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def report(
    args: argparse.Namespace,
    ledger: Ledger,
    receiver: Receiver,
    jobs: dict[str, Stored],
    verdict: Verdict,
    problems: list[str],
    errors: Counter[str],
    seconds: float,
    start_kills: int,
) -> None:
    statuses = Counter(job.status for job in jobs.values())
    lines = [
        f"soak: {args.cycles} SIGKILL cycles under load and {start_kills} while starting, "
        f"seed {args.seed}, {seconds:.0f} s",
        f"  creates acknowledged    {len(ledger.created):>8}   lost {len(verdict.lost_creates)}",
        f"  completes acknowledged  {len(ledger.completed):>8}   lost {len(verdict.lost_completes)}",
        f"  jobs in the store       {len(jobs):>8}   "
        + " ".join(f"{s} {n}" for s, n in sorted(statuses.items())),
        f"  double leases           {len(verdict.double_leases):>8}   history gaps {len(verdict.gaps)}",
        f"  callbacks due           {len(verdict.due):>8}   delivered "
        f"{len(verdict.due) - len(verdict.undelivered)}, not for that state {len(verdict.phantom)}",
        f"  webhook requests        {sum(receiver.deliveries.values()):>8}   "
        f"cut off by a kill {receiver.cut_off}",
        "  client errors           "
        + (", ".join(f"{kind} {n}" for kind, n in errors.most_common()) or "none"),
    ]
    for name, found in (
        ("lost create", verdict.lost_creates),
        ("lost complete", verdict.lost_completes),
        ("double lease", verdict.double_leases),
        ("history gap", verdict.gaps),
        ("undelivered callback", verdict.undelivered),
        ("callback for another state", verdict.phantom),
    ):
        lines += [f"  {name}: {item}" for item in list(found)[:10]]
    lines += [f"  problem: {problem}" for problem in problems]
    lines.append("  ok" if not problems and not verdict.violations else "  VIOLATIONS")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--callback-share", type=float, default=0.3, help="jobs with a webhook")
    parser.add_argument("--abandon-share", type=float, default=0.1, help="leases let time out")
    parser.add_argument("--fail-share", type=float, default=0.15, help="attempts failed")
    parser.add_argument(
        "--start-kills",
        type=float,
        default=0.15,
        help="share of cycles that first kill a server while it starts",
    )
    parser.add_argument("--backlog", type=int, default=500, help="pending jobs producers allow")
    parser.add_argument(
        "--cycle-seconds",
        type=float,
        default=10.0,
        help="longest a cycle's load runs before its kill",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=120.0,
        help="seconds the last start has to settle leases and webhooks",
    )
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quiet", action="store_true", help="no line per cycle")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
