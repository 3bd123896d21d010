"""``emit serve --store postgresql://…`` and the data commands' ``--store``, through the
real entry point, on a real PostgreSQL database: the first start, the quick start, a
restart on the same database, keys made beside a running server, and the refusals."""

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import EMIT, Served


@pytest.fixture
def url(database_url: str) -> str:
    """The database's URL with a password in it (the test cluster trusts loopback, so it
    is never asked for): it must never be printed."""
    return database_url.replace("postgresql://emit@", "postgresql://emit:sekret@")


def emit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EMIT, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_serve_keeps_everything_in_postgresql(url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    served = Served(data, "--store", url)
    try:
        text = "\n".join(served.lines)
        assert "(store: postgresql://emit@127.0.0.1:" in served.banner
        assert any(line.startswith("  node ") and "forwarding off" in line for line in served.lines)
        assert "sekret" not in text
        space, producer = served.value("space id"), served.value("producer key")
        worker = served.value("worker key")
        with httpx.Client(base_url=served.url, timeout=30) as http:
            made = http.post(f"/api/v1/spaces/{space}/jobs", json={"name": "hello"},
                             headers={"x-api-key": producer})  # fmt: skip
            assert made.status_code == 201
            job = made.json()["id"]
            polled = http.post(f"/api/v1/spaces/{space}/jobs/poll", json={"ack": True},
                               headers={"x-api-key": worker})  # fmt: skip
            assert [j["id"] for j in polled.json()["jobs"]] == [job]
            done = http.post(f"/api/v1/jobs/{job}/complete",
                             json={"result": {"ok": True}}, headers={"x-api-key": worker})  # fmt: skip
            assert done.status_code == 200, done.text
        # Beside the running server: a key made in the same database.
        made_key = emit("tokens", "create", space, "--name", "ops", "--preset", "worker",
                        "--json", EMIT_STORE=url)  # fmt: skip
        assert made_key.returncode == 0, made_key.stderr
        assert sorted(p.name for p in data.iterdir()) == ["admin.key"]  # no SQLite file
    finally:
        code, _ = served.stop()
    assert code == 0
    again = Served(data, "--store", url)
    try:
        assert f"space default: {space}" in "\n".join(again.lines)
        with httpx.Client(base_url=again.url, timeout=30) as http:
            got = http.get(f"/api/v1/jobs/{job}", headers={"x-api-key": producer})
            assert got.json()["status"] == "completed" and got.json()["result"] == {"ok": True}
    finally:
        again.stop()
    listed = emit("spaces", "list", "--store", url)
    assert listed.returncode == 0 and space in listed.stdout
    tokens = emit("tokens", "list", space, "--store", url)
    assert "ops" in tokens.stdout


def test_the_store_refusals_are_one_line(url: str, tmp_path: Path) -> None:
    bad = emit("serve", "--store", "mysql://x@y/z", "--data", str(tmp_path))
    assert bad.returncode == 2 and "must be a postgresql:// URL" in bad.stderr
    unreachable = url.rsplit(":", 1)[0] + ":1/emit"  # nothing listens on port 1
    down = emit("spaces", "list", "--store", unreachable)
    assert down.returncode == 2
    [line] = down.stderr.strip().splitlines()
    assert line.startswith("emit: cannot open the store postgresql://emit@127.0.0.1:1/emit")
    assert "sekret" not in line
    refused = emit("backup", str(tmp_path / "copy"), EMIT_STORE=url)
    assert refused.returncode == 2 and "pg_dump" in refused.stderr
