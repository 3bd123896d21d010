"""``emit jobs`` against a real server on a loopback port (the HTTP tests' server, in the
test's loop). The command runs its own ``trio.run``, so ``main`` is called in a thread;
capsys captures what it prints. Two cases run the real entry point in a subprocess.
Real time: the tests wait on answers and on the server's own state, never on the clock."""

import argparse
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import emit
from emit import jobs_cli
from emit.cli import main
from emit.http.settings import HttpSettings

from ..http.conftest import ADMIN_KEY, Server, start_server

ENVIRONMENT = ("EMIT_URL", "EMIT_SPACE_ID", "EMIT_API_KEY", "EMIT_PRODUCER_KEY", "EMIT_WORKER_KEY")
UNKNOWN_JOB = "01M8GN4P7JCVR9N1HMN4FBQZ2V"


@pytest.fixture(autouse=True)
def no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = HttpSettings(admin_key=ADMIN_KEY, rate=1_000_000, key_cache_seconds=0)
    async for running in start_server(tmp_path, settings):
        # The command's key: make, read and kill (retry is the kill scope's too).
        ops = await running.rt.create_token(
            running.space, name="ops", scopes=["jobs:create", "jobs:read", "jobs:kill"]
        )
        running.keys["ops"] = ops.key
        yield running


class Command:
    """``emit jobs …`` as a user runs it: its exit status, stdout and stderr."""

    def __init__(self, server: Server, capsys: pytest.CaptureFixture[str]) -> None:
        self.server = server
        self.capsys = capsys

    def flags(self, who: str = "ops") -> list[str]:
        return ["--url", self.server.url, "--key", self.server.keys[who]]

    async def __call__(self, *args: str, who: str = "ops") -> tuple[int, str, str]:
        status = await trio.to_thread.run_sync(partial(_main, ["jobs", *args, *self.flags(who)]))
        out, err = self.capsys.readouterr()
        return status, out, err

    async def json(self, *args: str) -> Any:
        status, out, err = await self(*args, "--json")
        assert (status, err) == (0, ""), err
        return json.loads(out)

    async def ok(self, *args: str) -> str:
        status, out, err = await self(*args)
        assert (status, err) == (0, ""), err
        return out

    async def refused(self, *args: str, who: str = "ops", status: int = 1) -> str:
        """The one line a refusal prints on stderr (and nothing on stdout)."""
        code, out, err = await self(*args, who=who)
        assert (code, out) == (status, ""), (code, out, err)
        [line] = err.splitlines()
        assert line.startswith("emit") and "Traceback" not in err
        return line


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exited:  # argparse's usage errors
        return exited.code if isinstance(exited.code, int) else 1


@pytest.fixture
def command(server: Server, capsys: pytest.CaptureFixture[str]) -> Command:
    return Command(server, capsys)


async def wire(server: Server, path: str) -> Any:
    response = await server.client.get(path, headers=server.headers("ops"))
    assert response.status_code == 200
    return response.json()


def without_events(job: dict[str, Any]) -> dict[str, Any]:
    """A job as a create, kill or retry answers it: ``GET J``'s, less its events."""
    return {field: value for field, value in job.items() if field != "events"}


def watching(server: Server, monkeypatch: pytest.MonkeyPatch) -> trio.Event:
    """Set once a job stream is open on the server (events from then on reach it)."""
    opened = trio.Event()
    hub = server.rt.hub
    subscribe = hub.subscribe_job

    def subscribed(*args: Any, **kwargs: Any) -> Any:
        subscription = subscribe(*args, **kwargs)
        opened.set()
        return subscription

    monkeypatch.setattr(hub, "subscribe_job", subscribed)
    return opened


# ---------------------------------------------------------------------------- making


async def test_create_with_every_flag_then_get_and_list(server: Server, command: Command) -> None:
    with trio.fail_after(20):
        out = await command.ok("create", "send-email", "--space", server.space,
                               "--payload", '{"to": "a@example.com"}')  # fmt: skip
        [line] = out.splitlines()
        verb, job_id, name, status = line.split()
        assert (verb, name, status) == ("created", "send-email", "(pending)")

        made = await command.json(
            "create", "resize", "--space", server.space, "--payload", "[1, 2]",
            "--priority", "7", "--max-retries", "5", "--timeout-seconds", "60",
            "--scheduled-for", "2099-01-01T00:00:00Z", "--callback-url", "https://example.com/h",
            "--idempotency-key", "resize-1",
        )  # fmt: skip
        assert made == without_events(await wire(server, f"/api/v1/jobs/{made['id']}"))
        assert (made["payload"], made["priority"], made["maxRetries"]) == ([1, 2], 7, 5)
        assert (made["timeoutSeconds"], made["status"]) == (60, "scheduled")
        assert made["scheduledFor"] == "2099-01-01T00:00:00.000Z"
        assert (made["callbackUrl"], made["idempotencyKey"]) == (
            "https://example.com/h",
            "resize-1",
        )
        again = await command.json("create", "resize", "--space", server.space,
                                   "--idempotency-key", "resize-1")  # fmt: skip
        assert again["id"] == made["id"]

        # get: the wire form with events, or key: value lines and the events.
        got = await command.json("get", job_id)
        assert got == await wire(server, f"/api/v1/jobs/{job_id}")
        assert [e["type"] for e in got["events"]] == ["created"]
        shown = (await command.ok("get", job_id)).splitlines()
        fields = dict(line.split(": ", 1) for line in shown[: shown.index("")])
        assert {label: value.strip() for label, value in fields.items()} == {
            "id": job_id,
            "name": "send-email",
            "status": "pending",
            "space": server.space,
            "attempt": "1/4 (attemptNumber 0, maxRetries 3)",
            "priority": "0",
            "timeout": "300 s",
            "progress": "-",
            "payload": '{"to": "a@example.com"}',
            "created": got["createdAt"],
            "updated": got["updatedAt"],
        }
        assert (
            len({len(label) + len(value) - len(value.strip()) for label, value in fields.items()})
            == 1
        )
        assert shown[-2:] == ["events (1):", f"    1  {got['createdAt']}  created          "
                              'attempt 0  {"name": "send-email", "priority": 0}']  # fmt: skip

        # list: the wire's array, or an aligned table, newest first.
        listed = await command.json("list", "--space", server.space)
        assert listed == await wire(server, f"/api/v1/spaces/{server.space}/jobs")
        assert [job["id"] for job in listed] == [made["id"], job_id]
        header, *rows = (await command.ok("list", "--space", server.space)).splitlines()
        assert header.split() == ["ID", "NAME", "STATUS", "ATTEMPT", "PROGRESS", "CREATED"]
        assert [row.split()[:5] for row in rows] == [
            [made["id"], "resize", "scheduled", "1/6", "-"],
            [job_id, "send-email", "pending", "1/4", "-"],
        ]
        starts = [header.index(column) for column in ("NAME", "STATUS", "CREATED")]
        for row, cells in zip(rows, ([made["id"], "resize"], [job_id, "send-email"]), strict=True):
            assert row.index(cells[1]) == starts[0]
        filtered = await command.json("list", "--space", server.space, "--status", "pending")
        assert [job["id"] for job in filtered] == [job_id]
        assert await command.json("list", "--space", server.space, "--name", "nope") == []
        assert await command.ok("list", "--space", server.space, "--name", "nope") == "no jobs\n"
        paged = (await command.ok("list", "--space", server.space, "--limit", "1")).splitlines()
        assert len(paged) == 3 and paged[-1] == "1-1 of 2 jobs"


async def test_kill_and_retry_one_job(server: Server, command: Command) -> None:
    with trio.fail_after(20):
        job = await command.json("create", "report", "--space", server.space)
        out = await command.ok("kill", job["id"], "--reason", "not needed")
        assert out == f"killed {job['id']} report (killed)\n"
        killed = await wire(server, f"/api/v1/jobs/{job['id']}")
        assert killed["result"] == {"reason": "not needed"}
        retried = await command.json("retry", job["id"])
        assert (retried["status"], retried["attemptNumber"]) == ("pending", 0)
        killed = await command.json("kill", job["id"])
        assert killed["status"] == "killed"
        assert await command.ok("retry", job["id"]) == f"retried {job['id']} report (pending)\n"


# ------------------------------------------------------------------- retry --all-dead


async def dead_jobs(server: Server, name: str, count: int) -> list[str]:
    async with (
        emit.AsyncClient(server.url, server.keys["producer"], server.space) as producer,
        emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker,
    ):
        made = await producer.create_many([{"name": name, "maxRetries": 0}] * count)
        got = await worker.poll(count, names=name, ack=True)
        results = await worker.fail_many([{"id": job.id, "error": "boom"} for job in got])
        assert all(isinstance(r, emit.ItemResult) for r in results)
        return [job.id for job in made]


async def test_retry_all_dead_pages_through_them_and_reports_each_failure(
    server: Server, command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_cli, "LIST_PAGE", 4)  # three pages for ten jobs
    with trio.fail_after(30):
        assert await command.ok("retry", "--all-dead", "--space", server.space) == "no dead jobs\n"
        dead = await dead_jobs(server, "send-email", 10)
        [other] = await dead_jobs(server, "resize", 1)

        # Someone else retries one of them first: that one is the server's 409.
        victim = dead[3]
        retry = emit.AsyncClient.retry

        async def raced(self: emit.AsyncClient, job_id: str) -> emit.JobView:
            if job_id == victim:
                await retry(self, job_id)
            return await retry(self, job_id)

        monkeypatch.setattr(emit.AsyncClient, "retry", raced)
        status, out, err = await command("retry", "--all-dead", "--space", server.space,
                                         "--name", "send-email")  # fmt: skip
        assert (status, out) == (1, "retried 9 of 10 dead jobs\n")
        [line] = err.splitlines()
        assert line.startswith(f"emit: {victim} not retried: ") and "(409 conflict)" in line
        monkeypatch.setattr(emit.AsyncClient, "retry", retry)

        listed = await wire(server, f"/api/v1/spaces/{server.space}/jobs?status=dead")
        assert [job["id"] for job in listed] == [other]  # the other name was left alone
        pending = await wire(server, f"/api/v1/spaces/{server.space}/jobs?status=pending")
        assert {job["id"] for job in pending} == set(dead)

        # --json: the jobs retried in the wire's form, and the failures.
        summary = await command.json("retry", "--all-dead", "--space", server.space)
        assert [job["id"] for job in summary["retried"]] == [other]
        assert summary["retried"][0]["status"] == "pending" and summary["failed"] == []

        # A key that may read but not retry: every one fails, each said, status 1.
        again = await dead_jobs(server, "thumbnail", 2)
        status, out, err = await command("retry", "--all-dead", "--space", server.space,
                                         who="producer")  # fmt: skip
        assert (status, out) == (1, "retried 0 of 2 dead jobs\n")
        assert sorted(line.split()[1] for line in err.splitlines()) == sorted(again)
        assert all("Missing required scope: jobs:kill (403 forbidden)" in line
                   for line in err.splitlines())  # fmt: skip
        status, out, _ = await command("retry", "--all-dead", "--space", server.space, "--json",
                                       who="producer")  # fmt: skip
        failed = json.loads(out)["failed"]
        assert status == 1 and {f["id"] for f in failed} == set(again)
        assert {(f["status"], f["code"]) for f in failed} == {(403, "forbidden")}


# -------------------------------------------------------------------------- watch


async def test_watch_shows_each_change_until_completed(
    server: Server, command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = watching(server, monkeypatch)
    with trio.fail_after(20):
        async with emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker:
            job = await command.json("create", "render", "--space", server.space)
            done: list[tuple[int, str, str]] = []

            async def watch() -> None:
                done.append(await command("watch", job["id"]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                [got] = await worker.poll(names="render", ack=True)
                await worker.progress(got.id, 25, "fetched")
                await worker.progress(got.id, 75.5, "resized")
                await worker.complete(got.id, {"pages": 3})
        [(status, out, err)] = done
        assert (status, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == "render [------------------------]   -%  pending  attempt 1/4"
        assert "render [######------------------]  25%  running  attempt 1/4  fetched" in lines
        assert "render [##################------]  75%  running  attempt 1/4  resized" in lines
        assert lines[-2].startswith("render [########################] 100%  completed")
        assert lines[-1] == 'completed: {"pages": 3}'
        assert len(lines) == len(set(lines))  # a line only when what it shows changed


async def test_watch_a_job_that_dies_or_is_killed_exits_1(
    server: Server, command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = watching(server, monkeypatch)
    with trio.fail_after(20):
        async with emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker:
            job = await command.json("create", "flaky", "--space", server.space,
                                     "--max-retries", "1")  # fmt: skip
            done: list[tuple[int, str, str]] = []

            async def watch() -> None:
                done.append(await command("watch", job["id"]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await opened.wait()
                [got] = await worker.poll(names="flaky", ack=True)
                await worker.progress(got.id, 50, "half")
                await worker.fail(got.id, "disk full")
                [got] = await worker.poll(names="flaky", ack=True)
                await worker.fail(got.id, "disk still full")
        [(status, out, err)] = done
        lines = out.splitlines()
        assert (status, err) == (1, "")
        assert "flaky [############------------]  50%  running  attempt 1/2  half" in lines
        assert "flaky [------------------------]   -%  pending  attempt 2/2" in lines
        assert lines[-1] == "dead after 2 attempts: disk still full"

        # Already final: no stream to follow, the outcome at once.
        killed = await command.json("create", "flaky", "--space", server.space)
        await command.ok("kill", killed["id"], "--reason", "superseded")
        status, out, _ = await command("watch", killed["id"])
        assert status == 1 and out.splitlines()[-1] == "killed: superseded"
        final = await command("watch", killed["id"], "--json")
        assert final[0] == 1 and json.loads(final[1]) == await wire(
            server, f"/api/v1/jobs/{killed['id']}"
        )


async def test_watch_reads_the_job_when_its_stream_fails(
    server: Server, command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[str] = []
    failed = trio.Event()
    token = trio.lowlevel.current_trio_token()
    follow = jobs_cli._follow

    async def refused(url: str, watched: jobs_cli.Watched, show: Any) -> None:
        tried.append(url)
        await follow("ws://127.0.0.1:1/nothing", watched, show)  # nobody listens there
        token.run_sync_soon(failed.set)  # from the command's thread to the test's loop

    monkeypatch.setattr(jobs_cli, "_follow", refused)
    with trio.fail_after(20):
        async with emit.AsyncClient(server.url, server.keys["worker"], server.space) as worker:
            job = await command.json("create", "render", "--space", server.space)
            done: list[tuple[int, str, str]] = []

            async def watch() -> None:
                done.append(await command("watch", job["id"]))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await failed.wait()  # the stream failed once: watch reads the job now
                [got] = await worker.poll(names="render", ack=True)
                await worker.complete(got.id, "ok")
        [(status, out, err)] = done
        assert (status, err) == (0, "") and out.splitlines()[-1] == 'completed: "ok"'
        assert tried[0].startswith(server.url.replace("http", "ws") + "/api/v1/realtime/")


def test_on_a_terminal_the_bar_is_one_line_redrawn() -> None:
    out = io.StringIO()
    bar = jobs_cli.Bar(out, tty=True, columns=30)
    watched = jobs_cli.Watched("render", "pending", 0, 3, None, "")
    bar.show(watched.line())
    watched.take({"type": "progress", "status": "running", "attemptNumber": 0,
                  "data": {"percent": 40, "message": "resizing"}})  # fmt: skip
    bar.show(watched.line())
    bar.show(watched.line())  # unchanged: nothing written
    watched.take({"type": "retried", "status": "pending", "attemptNumber": 1, "data": None})
    bar.show("short")
    bar.end()
    first, second = watched_lines = [
        "render [------------------------]   -%  pending  attempt 1/4"[:29],
        "render [##########--------------]  40%  running  attempt 1/4  resizing"[:29],
    ]
    assert out.getvalue() == f"\r{first}\r{second}\r{'short'.ljust(29)}\n"
    assert len(set(watched_lines)) == 2
    assert (watched.status, watched.attempt_number, watched.percent) == ("pending", 1, None)


# ------------------------------------------------------------------------- errors


async def test_bad_input_and_refusals_are_one_line_and_a_status(
    server: Server, command: Command
) -> None:
    with trio.fail_after(20):
        space = ["--space", server.space]
        line = await command.refused("create", "x", *space, "--payload", "{'a': 1}", status=2)
        assert line.startswith("emit: --payload is not valid JSON: ")
        line = await command.refused("create", "x", *space, "--payload", "@/nonexistent", status=2)
        assert line == "emit: --payload: cannot read /nonexistent: No such file or directory"
        line = await command.refused("create", "x", *space, "--priority", "5000", status=2)
        assert line == "emit: priority must be an integer from -1000 to 1000 (400 invalid_request)"
        assert await command.json("list", *space) == []  # nothing was made

        line = await command.refused("get", UNKNOWN_JOB)
        assert line == f"emit: no job {UNKNOWN_JOB} in this space (404 not_found)"
        job = await command.json("create", "x", *space)
        line = await command.refused("kill", job["id"], who="producer")
        assert line == "emit: Missing required scope: jobs:kill (403 forbidden)"
        assert (await command.refused("retry", job["id"])).endswith("(409 conflict)")
        line = await command.refused("get", job["id"], who="unknown")
        assert line.endswith("(401 unauthorized)")

        # Usage: before anything is sent.
        line = await command.refused("list", status=2)
        assert line == "emit: no space: give --space or set EMIT_SPACE_ID"
        line = await command.refused("retry", job["id"], "--all-dead", *space, status=2)
        assert line == "emit: emit jobs retry takes a job's ID or --all-dead, one of the two"
        line = await command.refused("retry", job["id"], "--name", "x", status=2)
        assert line == "emit: emit jobs retry: --name goes with --all-dead"
        assert (await command.refused("retry", status=2)).startswith("emit: emit jobs retry")
        line = await command.refused("create", "x", "--priority", "high", status=2)
        assert line.startswith("emit jobs create: argument --priority: invalid int value")


async def test_a_server_that_cannot_be_reached_is_one_line_and_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(20):
        # kill is not resent after a connection error, so this fails at once.
        argv = ["jobs", "kill", UNKNOWN_JOB, "--url", "http://127.0.0.1:1", "--key", "k"]
        assert await trio.to_thread.run_sync(_main, argv) == 1
        out, err = capsys.readouterr()
        [line] = err.splitlines()
        assert out == "" and line.startswith("emit: cannot reach http://127.0.0.1:1: ")


async def test_settings_come_from_the_environment(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(20):
        status = await trio.to_thread.run_sync(_main, ["jobs", "list"])
        assert (status, capsys.readouterr().err) == (
            2,
            "emit: no server URL: give --url or set EMIT_URL\n",
        )
        monkeypatch.setenv("EMIT_URL", "localhost:8787")
        await trio.to_thread.run_sync(_main, ["jobs", "list"])
        assert "must start with http:// or https://" in capsys.readouterr().err
        monkeypatch.setenv("EMIT_URL", server.url + "/")
        status = await trio.to_thread.run_sync(_main, ["jobs", "list"])
        assert (status, capsys.readouterr().err) == (
            2,
            "emit: no key: give --key or set EMIT_API_KEY (or EMIT_PRODUCER_KEY)\n",
        )
        monkeypatch.setenv("EMIT_SPACE_ID", server.space)
        monkeypatch.setenv("EMIT_WORKER_KEY", server.keys["unknown"])
        monkeypatch.setenv("EMIT_PRODUCER_KEY", server.keys["producer"])
        assert await trio.to_thread.run_sync(_main, ["jobs", "create", "env"]) == 0
        assert capsys.readouterr().out.startswith("created ")
        monkeypatch.setenv("EMIT_API_KEY", server.keys["ops"])  # before the producer key
        assert await trio.to_thread.run_sync(_main, ["jobs", "list", "--json"]) == 0
        [job] = json.loads(capsys.readouterr().out)
        assert await trio.to_thread.run_sync(_main, ["jobs", "kill", job["id"]]) == 0
        # A flag wins over its variable.
        argv = ["jobs", "get", job["id"], "--key", server.keys["unknown"]]
        assert await trio.to_thread.run_sync(_main, argv) == 1


def test_the_key_is_the_flag_then_emit_api_key_then_the_client_s_variables() -> None:
    def key(flag: str | None, **environ: str) -> str:
        args = argparse.Namespace(url="http://h", key=flag, space=None)
        return jobs_cli.connection(args, environ).key

    everything = {"EMIT_API_KEY": "a", "EMIT_PRODUCER_KEY": "p", "EMIT_WORKER_KEY": "w"}
    assert key("f", **everything) == "f"
    assert key(None, **everything) == "a"
    assert key(None, **everything | {"EMIT_API_KEY": ""}) == "p"  # empty: unset
    assert key(None, EMIT_WORKER_KEY="w") == "w"


# ---------------------------------------------------------------- the real command


@pytest.fixture
def env(server: Server) -> Iterator[dict[str, str]]:
    yield {**os.environ, "EMIT_URL": server.url, "EMIT_SPACE_ID": server.space,
           "EMIT_API_KEY": server.keys["ops"]}  # fmt: skip


async def test_the_emit_command_in_a_subprocess(server: Server, env: dict[str, str]) -> None:
    emit_jobs = [sys.executable, "-m", "emit", "jobs"]
    with trio.fail_after(60):
        made = await trio.run_process(
            [*emit_jobs, "create", "hello", "--payload", '{"to": "world"}', "--json"],
            capture_stdout=True, capture_stderr=True, env=env,
        )  # fmt: skip
        job = json.loads(made.stdout)
        assert job == without_events(await wire(server, f"/api/v1/jobs/{job['id']}"))
        assert job["payload"] == {"to": "world"} and made.stderr == b""
        missing = await trio.run_process(
            [*emit_jobs, "get", UNKNOWN_JOB], capture_stdout=True, capture_stderr=True,
            env=env, check=False,
        )  # fmt: skip
        assert (missing.returncode, missing.stdout) == (1, b"")
        assert (
            missing.stderr.decode() == f"emit: no job {UNKNOWN_JOB} in this space (404 not_found)\n"
        )


def test_emit_jobs_reaches_the_server_through_its_http_api_alone() -> None:
    from ..test_layering import ENGINE, SOURCE, under

    reached = [i.module for i in SOURCE.imports("emit.jobs_cli")]
    assert "emit.client" in reached
    assert [m for m in reached if under(m, (*ENGINE, "emit.runtime", "emit.http"))] == []
