"""kill -9 at random moments loses no acknowledged change and never leaves a job with
two live leases. The engine runs in a subprocess on a real SQLite file, or a real
PostgreSQL database, under load (crash_driver.py); the test kills it several times,
restarts it, and checks everything it had acknowledged. Random but seeded: the same kill points on every run."""

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("crash_driver.py")


def driver(data: Path | str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(data), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def record(line: str, created: set[str], completed: set[str]) -> None:
    """Note what one line of the driver says was acknowledged. Only a whole line counts:
    a process killed while printing may leave its last line cut short (its jobs were
    acknowledged, but their ids cannot be read whole, so they are left out of the check)."""
    if not line.endswith("\n"):
        return
    kind, *ids = line.split() or ["", ""]
    if kind == "created":
        created.update(ids)
    elif kind == "completed":
        completed.update(ids)


def check_leases(events: list[list[object]]) -> None:
    """Replay a job's history: a delivery only while no lease is live."""
    leased = False
    for _, kind, _ in events:
        if kind == "delivered":
            assert not leased, f"two live leases: {events}"
            leased = True
        elif kind in ("delivery_timeout", "retried", "completed", "dead", "killed"):
            leased = False


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the driver keeps its data: a data directory, or a PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path
    url: str = request.getfixturevalue("database_url")
    return url


def test_kill_9_loses_no_acknowledged_change(location: Path | str) -> None:
    rng = random.Random(20261128)
    init = driver(location, "init")
    space_id = init.communicate(timeout=60)[0].strip()
    created: set[str] = set()
    completed: set[str] = set()
    for _ in range(6):
        proc = driver(location, "run", space_id)
        assert proc.stdout is not None
        kill_after = rng.randint(3, 40)
        for seen, line in enumerate(proc.stdout, start=1):
            record(line, created, completed)
            if seen == kill_after:
                proc.kill()  # SIGKILL, mid-write as likely as not
                break
        # What it printed before it died was acknowledged too.
        rest, _ = proc.communicate(timeout=60)
        for line in rest.splitlines(keepends=True):
            record(line, created, completed)
        assert proc.returncode == -9

    dump = driver(location, "dump", space_id)
    state = json.loads(dump.communicate(timeout=120)[0])
    jobs = {job["id"]: job for job in state["jobs"]}
    assert created, "the driver acknowledged nothing: the test proved nothing"
    assert completed
    assert created <= jobs.keys(), "an acknowledged create was lost"
    for job_id in completed:
        assert jobs[job_id]["status"] == "completed", "an acknowledged completion was lost"
        assert jobs[job_id]["result"] == jobs[job_id]["payload"]
    for job in jobs.values():
        seqs = [event[0] for event in job["events"]]
        assert seqs == list(range(1, len(seqs) + 1)), "a job's history has a gap"
        check_leases(job["events"])
    counted = {status: 0 for status in state["counts"]}
    for job in jobs.values():
        counted[job["status"]] += 1
    assert counted == state["counts"], "recovered counters disagree with the jobs"
    if isinstance(location, Path):
        db = sqlite3.connect(location / "emit.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
