"""`emit backup`, on the real entry point: a copy made while a server takes a steady
stream of creates and completions is a data directory that `emit serve` serves, with
everything acknowledged before the copy began; and what it refuses, in one line."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from pathlib import Path

import httpx

from .test_cli import EMIT, Served


class Load:
    """A producer and a worker in one thread: create a job, take what is ready (acked
    on delivery), complete it; again until stopped. Records what was acknowledged."""

    def __init__(self, served: Served) -> None:
        self.url = served.url
        self.space = served.value("space id")
        self.producer = {"x-api-key": served.value("producer key")}
        self.worker = {"x-api-key": served.value("worker key")}
        self.created: list[str] = []
        self.completed: list[str] = []
        self.errors: list[str] = []
        self.going = threading.Event()  # set once 50 jobs are complete
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                made = http.post(
                    f"/api/v1/spaces/{self.space}/jobs",
                    json={"name": "work", "payload": {"n": len(self.created)}},
                    headers=self.producer,
                )
                if made.status_code != 201:
                    self.errors.append(f"create: {made.status_code} {made.text}")
                    return
                self.created.append(made.json()["id"])
                polled = http.post(
                    f"/api/v1/spaces/{self.space}/jobs/poll",
                    json={"count": 5, "ack": True},
                    headers=self.worker,
                )
                for job in polled.json()["jobs"]:
                    done = http.post(
                        f"/api/v1/jobs/{job['id']}/complete", json={}, headers=self.worker
                    )
                    if done.status_code != 200:
                        self.errors.append(f"complete: {done.status_code} {done.text}")
                        return
                    self.completed.append(job["id"])
                    if len(self.completed) >= 50:
                        self.going.set()


def backup(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EMIT, "backup", *args], capture_output=True, text=True, timeout=60)


def test_a_backup_under_load_serves_everything_acknowledged_before_it(tmp_path: Path) -> None:
    served = Served(tmp_path / "data")
    try:
        space = served.value("space id")
        producer = {"x-api-key": served.value("producer key")}
        with httpx.Client(base_url=served.url, timeout=30) as http:
            for batch in range(4):  # a store of a few MiB: the copy takes several steps
                bulk = [{"name": "bulk", "payload": {"pad": "x" * 400}} for _ in range(1000)]
                made = http.post(f"/api/v1/spaces/{space}/jobs", json=bulk, headers=producer)
                assert made.status_code == 201, (batch, made.text)
        load = Load(served)
        load.thread.start()
        try:
            assert load.going.wait(30), load.errors
            created, completed = list(load.created), list(load.completed)
            done = backup(str(tmp_path / "copy"), "--data", str(tmp_path / "data"))
            during = len(load.created) - len(created)
            assert load.going.wait(0) and not load.errors
        finally:
            load.stop.set()
            load.thread.join(timeout=30)
        assert done.returncode == 0, done.stderr
        assert "backed up" in done.stdout and "admin.key" in done.stdout
        assert not load.errors and during > 0  # the server kept serving while it copied
    finally:
        code, _ = served.stop()
    assert code == 0

    copy = tmp_path / "copy"
    assert sorted(p.name for p in copy.iterdir()) == ["admin.key", "emit.db"]
    assert not list(tmp_path.glob(".copy.*"))  # no partial copy left beside it
    assert (copy / "admin.key").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(copy / "emit.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        statuses = dict(db.execute("SELECT id, status FROM jobs"))
    assert all(job in statuses for job in created)
    assert all(statuses[job] == "completed" for job in completed)

    again = Served(copy)  # a later start: it finds its admin key and its space
    try:
        assert f"space default: {space}" in "\n".join(again.lines)
        admin = {"authorization": f"Bearer {(copy / 'admin.key').read_text().strip()}"}
        worker = {"x-api-key": served.value("worker key")}
        with httpx.Client(base_url=again.url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/api/v1/spaces", headers=admin).status_code == 200
            for job in [*created[-20:], *completed[-20:]]:
                read = http.get(f"/api/v1/jobs/{job}", headers=producer)
                assert read.status_code == 200 and read.json()["status"] == statuses[job]
            made = http.post(f"/api/v1/spaces/{space}/jobs", json={"name": "after"},
                             headers=producer)  # fmt: skip
            assert made.status_code == 201
            taken = http.post(f"/api/v1/spaces/{space}/jobs/poll",
                              json={"count": 50, "name": "after"}, headers=worker)  # fmt: skip
            assert [job["id"] for job in taken.json()["jobs"]] == [made.json()["id"]]
    finally:
        code, _ = again.stop()
    assert code == 0


def test_what_backup_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run([*EMIT, "spaces", "create", "one", "--data", str(data)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("mine")
    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / "emit.db") as other:
        other.execute("CREATE TABLE t (x)")
    for args, says in [
        ([str(tmp_path / "full"), "--data", str(data)], "exists and is not empty"),
        ([str(data), "--data", str(data)], "exists and is not empty"),
        ([str(tmp_path / "c1"), "--data", str(tmp_path / "typo")], "no emit data"),
        ([str(tmp_path / "c2"), "--data", str(tmp_path / "other")], "not an emit store"),
    ]:
        done = backup(*args)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (tmp_path / "full" / "something").read_text() == "mine"
    assert not (tmp_path / "typo").exists() and not (tmp_path / "c1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "full", "other"]

    (tmp_path / "empty").mkdir()  # an empty directory is taken, as a new one would be
    assert backup(str(tmp_path / "empty"), "--data", str(data)).returncode == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["emit.db"]
