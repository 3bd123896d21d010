"""The real ``emit`` entry point, in subprocesses: first-start output, later starts, the
``--json`` shapes, a key made and revoked beside a running server, and a clean exit on
SIGTERM. Each wait is bounded by a watchdog that kills a stuck process."""

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from emit.domain.settings import Retention

EMIT = [sys.executable, "-m", "emit"]


def run(*args: str, data: Path) -> str:
    done = subprocess.run(
        [*EMIT, *args, "--data", str(data)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Served:
    def __init__(self, data: Path, *extra: str) -> None:
        env = {**os.environ}
        env.pop("EMIT_ADMIN_KEY", None)
        self.proc = subprocess.Popen(
            [*EMIT, "serve", "--data", str(data), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.watchdog = threading.Timer(60, self.proc.kill)
        self.watchdog.start()
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("  public token"):  # the last line of a first start
                break
            if line.startswith("  space ") and not line.startswith("  space id"):
                break  # a later start lists its spaces
        self.banner = next(line for line in self.lines if line.startswith("emit "))
        self.url = self.banner.split()[3]

    def value(self, label: str) -> str:
        line = next(line for line in self.lines if line.strip().startswith(label))
        return line.split()[len(label.split())]

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        rest, _ = self.proc.communicate(timeout=60)
        self.watchdog.cancel()
        return self.proc.returncode, rest


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "data", "--key-cache-seconds", "0")
    yield server
    if server.proc.poll() is None:
        server.stop()


def test_first_start_prints_the_keys_once_and_they_work(served: Served, tmp_path: Path) -> None:
    assert served.url.startswith("http://127.0.0.1:")
    space = served.value("space id")
    producer = served.value("producer key")
    worker = served.value("worker key")
    assert served.value("public token").startswith("emit_pub_")
    admin_file = tmp_path / "data" / "admin.key"
    assert admin_file.stat().st_mode & 0o777 == 0o600
    assert served.value("admin key") == admin_file.read_text().strip()
    with httpx.Client(base_url=served.url, timeout=30) as http:
        made = http.post(f"/api/v1/spaces/{space}/jobs", json={"name": "hello"},
                         headers={"x-api-key": producer})  # fmt: skip
        assert made.status_code == 201
        polled = http.post(f"/api/v1/spaces/{space}/jobs/poll", json={"count": 5},
                           headers={"x-api-key": worker})  # fmt: skip
        assert [job["id"] for job in polled.json()["jobs"]] == [made.json()["id"]]
    code, rest = served.stop()
    assert code == 0 and "emit stopped" in rest
    [export] = [line.split()[1:] for line in rest.splitlines() if line.startswith("  export ")]
    assert dict(pair.split("=", 1) for pair in export) == {
        "EMIT_URL": served.url,
        "EMIT_SPACE_ID": space,
        "EMIT_PRODUCER_KEY": producer,
        "EMIT_WORKER_KEY": worker,
    }
    [curl] = [line for line in rest.splitlines() if line.startswith("  curl ")]
    assert "$EMIT_URL/api/v1/spaces/$EMIT_SPACE_ID/jobs" in curl and "$EMIT_PRODUCER_KEY" in curl
    assert "docs/" in rest and "openapi.json" in rest

    again = Served(tmp_path / "data")
    try:
        text = "\n".join(again.lines)
        assert f"space default: {space}" in text
        assert "emit_" not in text  # later starts never print keys
    finally:
        code, _ = again.stop()
    assert code == 0


def test_json_shapes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    space = json.loads(run("spaces", "create", "video", "--json", data=data))
    assert set(space) == {"id", "name", "publicToken"} and space["name"] == "video"
    listed = json.loads(run("spaces", "list", "--json", data=data))
    assert listed == {"spaces": [space]}
    token = json.loads(run("tokens", "create", space["id"], "--name", "w", "--preset", "worker",
                           "--json", data=data))  # fmt: skip
    assert set(token) == {"id", "name", "scopes", "key"} and "jobs:poll" in token["scopes"]
    scoped = json.loads(run("tokens", "create", space["id"], "--name", "p",
                            "--scopes", "jobs:create,jobs:read", "--json", data=data))  # fmt: skip
    assert scoped["scopes"] == ["jobs:create", "jobs:read", "jobs:read:progress"]
    tokens = json.loads(run("tokens", "list", space["id"], "--json", data=data))["tokens"]
    assert {t["name"] for t in tokens} == {"public", "w", "p"}
    assert all("key" not in t for t in tokens)


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("spaces", "create", "one", data=data)
    done = subprocess.run(
        [*EMIT, "tokens", "create", "01NOSUCHSPACE0000000000000", "--name", "x",
         "--preset", "worker", "--data", str(data)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "no space" in done.stderr


def test_a_key_made_and_revoked_beside_a_running_server(served: Served, tmp_path: Path) -> None:
    data = tmp_path / "data"
    space = served.value("space id")
    made = json.loads(run("tokens", "create", space, "--name", "late", "--preset", "worker",
                          "--json", data=data))  # fmt: skip
    stats = f"/api/v1/spaces/{space}/stats"
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert http.get(stats, headers={"x-api-key": made["key"]}).status_code == 200
        run("tokens", "revoke", space, made["id"], data=data)
        assert http.get(stats, headers={"x-api-key": made["key"]}).status_code == 401


def test_sigterm_answers_parked_long_polls_and_exits_cleanly(served: Served) -> None:
    space = served.value("space id")
    worker = served.value("worker key")
    answers: list[httpx.Response] = []

    def long_poll() -> None:
        with httpx.Client(base_url=served.url, timeout=60) as http:
            answers.append(
                http.post(
                    f"/api/v1/spaces/{space}/jobs/poll",
                    json={"wait": 60},
                    headers={"x-api-key": worker},
                )
            )

    poller = threading.Thread(target=long_poll)
    poller.start()
    # Stop only once the poll is parked: ask the server until it says so (bounded).
    with httpx.Client(base_url=served.url, timeout=30) as http:
        producer = served.value("producer key")
        for _ in range(2000):
            stats = http.get(f"/api/v1/spaces/{space}/stats", headers={"x-api-key": producer})
            if stats.json()["pollers"] == 1:
                break
        else:
            pytest.fail("the long poll never parked")
    code, rest = served.stop()
    poller.join(timeout=30)
    assert not poller.is_alive()
    assert answers and answers[0].status_code == 200 and answers[0].json() == {"jobs": []}
    assert code == 0 and "emit stopped" in rest


def test_a_start_that_cannot_listen_fails_cleanly_and_shows_its_keys_next_time(
    served: Served, tmp_path: Path
) -> None:
    port = served.url.rsplit(":", 1)[1]
    second = tmp_path / "second"
    done = subprocess.run(
        [*EMIT, "serve", "--data", str(second), "--port", port],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "cannot listen" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (second / "admin.key").exists()  # nothing was made that nobody has seen
    later = Served(second)
    try:
        assert any(line.strip().startswith("worker key") for line in later.lines)
        assert any(line.strip().startswith("admin key") for line in later.lines)
    finally:
        later.stop()


def test_read_commands_need_an_existing_data_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [*EMIT, "spaces", "list", "--data", str(tmp_path / "typo")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "no emit data" in done.stderr
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    ("flag", "named"), [("--rate-limit", "rate"), ("--callback-tries", "tries")]
)
def test_bad_flags_are_refused_before_anything_is_made(
    tmp_path: Path, flag: str, named: str
) -> None:
    done = subprocess.run(
        [*EMIT, "serve", "--data", str(tmp_path / "d"), flag, "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d").exists()


def test_the_callback_flags_make_the_retry_policy() -> None:
    from emit.cli import _parser, callback_policy

    args = _parser().parse_args(["serve"])
    default = callback_policy(args)
    assert (default.tries, default.first_delay, default.factor, default.timeout) == (8, 1, 3, 10)
    args = _parser().parse_args(
        ["serve", "--callback-tries", "12", "--callback-first-delay", "5",
         "--callback-factor", "2.5", "--callback-timeout", "30"]
    )  # fmt: skip
    policy = callback_policy(args)
    assert (policy.tries, policy.first_delay, policy.factor, policy.timeout) == (12, 5, 2.5, 30)
    assert policy.delay(3, 0.5) == 5 * 2.5**2  # the wait after the third failed try


def test_serve_takes_its_flags_from_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "from-env"
    env = {**os.environ, "EMIT_DATA": str(data), "EMIT_PORT": "0", "EMIT_LOG_FORMAT": "json"}
    env.pop("EMIT_ADMIN_KEY", None)
    proc = subprocess.Popen([*EMIT, "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.split()[3]
        assert f"(data: {data})" in first and (data / "admin.key").exists()
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        watchdog.cancel()
    access = [json.loads(line) for line in err.splitlines() if '"emit.access"' in line]
    assert [(a["method"], a["route"], a["status"]) for a in access] == [("GET", "/healthz", 200)]


def test_the_retain_flags_make_the_default_retention() -> None:
    from emit.cli import _parser, retention

    assert retention(_parser().parse_args(["serve"])) == Retention(604800, 2592000, 2592000)
    args = _parser().parse_args(
        ["serve", "--retain-completed", "60", "--retain-dead", "0", "--retain-killed", "3600"]
    )
    assert retention(args) == Retention(completed=60, dead=None, killed=3600)
    for bad in ("-1", "1.5", "week"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["serve", "--retain-completed", bad])
