"""``emit jobs``: a space's jobs from the command line, over the public HTTP API through
`AsyncClient` — so it works against any emit server, unlike ``emit spaces`` and
``emit tokens``, which open a data directory.

    emit jobs create NAME [--payload JSON] [--priority N] [--max-retries N] …
    emit jobs list [--status S] [--name N] [--limit N] [--offset N]
    emit jobs get ID | emit jobs kill ID [--reason R]
    emit jobs retry ID | emit jobs retry --all-dead [--name N]
    emit jobs watch ID
    each with [--url URL] [--key KEY] [--space ID] [--json]

Exit status: 0 done; 1 the server refused (401, 403, 404, 409, 429, 503…) or could not
be reached, a watched job ended dead or killed, or a job of ``--all-dead`` was not
retried; 2 a usage error: a flag, a setting missing, JSON that does not parse, or the
server's 400 (the input was wrong); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
import trio
import trio_websocket

from .client import FINAL, WAIT_READ_FIRST, WAIT_READ_MAX, AsyncClient
from .codec import loads
from .domain.model import JobStatus
from .domain.views import JobView
from .errors import EmitError, InvalidRequest
from .isotime import iso, stamp

REFUSED = 1
"""The server said no, or could not be reached; or the job ended badly."""
USAGE = 2
"""The command was wrong, whether the command line or the server's 400 said so."""
INTERRUPTED = 130

LIST_PAGE = 100
"""Jobs a page when ``retry --all-dead`` pages through the dead (the API's most)."""
RETRY_CONCURRENCY = 8
"""Retries of ``--all-dead`` in flight at once."""
BAR_WIDTH = 24


class UsageError(Exception):
    """The command cannot be run as given; the message says why, in one line."""


# ------------------------------------------------------------------------- parser


def add_jobs_parser(commands: Any) -> None:
    """``emit jobs`` and its subcommands, on the ``emit`` parser's subcommands."""
    jobs = commands.add_parser(
        "jobs",
        help="create, list, read, kill, retry and watch jobs over HTTP",
        description="A space's jobs through the server's HTTP API: needs a running server, "
        "its URL and a key. --url, --key and --space default from the environment.",
    ).add_subparsers(dest="action", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = jobs.add_parser(name, help=help, description=help)
        sub.add_argument("--url", help="the server's base URL (default: $EMIT_URL)")
        sub.add_argument(
            "--key",
            help="the API key (default: $EMIT_API_KEY, else $EMIT_PRODUCER_KEY, "
            "else $EMIT_WORKER_KEY)",
        )
        sub.add_argument("--space", metavar="ID", help="the space's id (default: $EMIT_SPACE_ID)")
        sub.add_argument("--json", action="store_true", help="print the API's JSON")
        return sub

    create = command("create", "make a job")
    create.add_argument("name", help="the job's name (its type), 1 to 200 characters")
    create.add_argument(
        "--payload",
        metavar="JSON",
        help="the payload: JSON, or @FILE to read it from a file (@- stdin)",
    )
    create.add_argument(
        "--priority", type=int, metavar="N", help="-1000 to 1000, higher first (default 0)"
    )
    create.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        help="retries after the first attempt, 0 to 25 (default 3)",
    )
    create.add_argument(
        "--timeout-seconds",
        type=int,
        metavar="N",
        help="each attempt's deadline, 1 to 86400 (default 300)",
    )
    create.add_argument("--scheduled-for", metavar="ISO", help="an ISO 8601 time to run at")
    create.add_argument("--callback-url", metavar="URL", help="a URL to POST the outcome to")
    create.add_argument(
        "--idempotency-key", metavar="KEY", help="a create repeated with it makes no new job"
    )

    listing = command("list", "a space's jobs, newest first")
    listing.add_argument("--status", choices=[s.value for s in JobStatus], help="only these")
    listing.add_argument("--name", help="only jobs of this name")
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help="jobs to show, 1 to 100"
    )
    listing.add_argument("--offset", type=int, default=0, metavar="N", help="jobs to skip first")

    get = command("get", "a job, with its events")
    get.add_argument("job_id", metavar="ID", help="the job's id")

    kill = command("kill", "kill a job that is not final")
    kill.add_argument("job_id", metavar="ID", help="the job's id")
    kill.add_argument("--reason", help="why, kept on the job")

    retry = command("retry", "put a dead or killed job back in the queue")
    retry.add_argument("job_id", metavar="ID", nargs="?", help="the job's id (or --all-dead)")
    retry.add_argument(
        "--all-dead", action="store_true", help="retry every dead job of the space instead"
    )
    retry.add_argument("--name", help="with --all-dead: only dead jobs of this name")

    watch = command("watch", "follow a job live until it is final")
    watch.add_argument("job_id", metavar="ID", help="the job's id")


# ---------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class Connection:
    url: str
    key: str
    space_id: str | None


def connection(args: argparse.Namespace, environ: Mapping[str, str]) -> Connection:
    """The server, key and space: each flag, else its variable (empty counts as unset).
    The key is ``EMIT_API_KEY`` (the command's own), else the client's variables."""
    url = args.url or environ.get("EMIT_URL")
    if not url:
        raise UsageError("no server URL: give --url or set EMIT_URL")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"the server URL must start with http:// or https://, not {url!r}")
    key = (
        args.key
        or environ.get("EMIT_API_KEY")
        or environ.get("EMIT_PRODUCER_KEY")
        or environ.get("EMIT_WORKER_KEY")
    )
    if not key:
        raise UsageError("no key: give --key or set EMIT_API_KEY (or EMIT_PRODUCER_KEY)")
    space_id = args.space or environ.get("EMIT_SPACE_ID") or None
    return Connection(url.rstrip("/"), key, space_id)


def _needs_space(args: argparse.Namespace) -> bool:
    return args.action in ("create", "list") or (args.action == "retry" and args.all_dead)


def payload(text: str | None) -> Any:
    """The ``--payload`` value: JSON, or ``@FILE`` naming a file of JSON (``@-``: stdin)."""
    if text is None:
        return None
    if text.startswith("@"):
        path = text[1:]
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as file:
                    text = file.read()
        except OSError as error:
            raise UsageError(f"--payload: cannot read {path}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"--payload is not valid JSON: {error}") from None


# ------------------------------------------------------------------------ output


def _to_the_second(wall: float) -> str:
    """``2026-11-28T10:30:00Z``: a wire time without its milliseconds, for the table."""
    return f"{stamp(wall)[:19]}Z"


def _attempt(job: JobView) -> str:
    """The attempt a job is on, of the most it may have (a job runs at most
    ``maxRetries + 1`` times)."""
    return f"{job.attempt_number + 1}/{job.max_retries + 1}"


def _percent(progress: Any) -> float | None:
    if isinstance(progress, Mapping) and isinstance(progress.get("percent"), int | float):
        return float(progress["percent"])
    return None


def _progress_text(progress: Any) -> str:
    percent = _percent(progress)
    if percent is None:
        return "-"
    message = progress.get("message") if isinstance(progress, Mapping) else None
    return f"{percent:g}%" + (f" {message}" if message else "")


def table(jobs: list[JobView]) -> list[str]:
    """The lines of ``emit jobs list``: a header, then a job a line, in aligned columns."""
    rows = [["ID", "NAME", "STATUS", "ATTEMPT", "PROGRESS", "CREATED"]]
    for job in jobs:
        percent = _percent(job.progress)
        rows.append(
            [
                job.id,
                job.name,
                job.status.value,
                _attempt(job),
                "-" if percent is None else f"{percent:g}%",
                _to_the_second(job.created_at),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def details(job: JobView) -> list[str]:
    """The lines of ``emit jobs get``: ``key: value`` lines, then the events."""
    fields: list[tuple[str, str | None]] = [
        ("id", job.id),
        ("name", job.name),
        ("status", job.status.value),
        ("space", job.space_id),
        (
            "attempt",
            f"{_attempt(job)} (attemptNumber {job.attempt_number}, maxRetries {job.max_retries})",
        ),
        ("priority", str(job.priority)),
        ("timeout", f"{job.timeout_seconds} s"),
        ("progress", _progress_text(job.progress)),
        ("payload", _compact(job.payload)),
        ("result", None if job.result_json is None else _compact(job.result)),
        ("scheduled for", iso(job.scheduled_for)),
        ("callback url", job.callback_url),
        ("idempotency key", job.idempotency_key),
        ("created", iso(job.created_at)),
        ("updated", iso(job.updated_at)),
        ("delivered", iso(job.delivered_at)),
        ("started", iso(job.started_at)),
        ("completed", iso(job.completed_at)),
    ]
    shown = [(label, value) for label, value in fields if value is not None]
    width = max(len(label) for label, _ in shown) + 1
    lines = [f"{label + ':':<{width}} {value}" for label, value in shown]
    events = job.events or ()
    lines += ["", f"events ({len(events)}):"]
    for event in events:
        data = "" if event.data is None else f"  {_compact(event.data)}"
        lines.append(
            f"  {event.seq:>3}  {iso(event.created_at)}  {event.type.value:<16} "
            f"attempt {event.attempt_number}{data}".rstrip()
        )
    return lines


def one_line(verb: str, job: JobView) -> str:
    return f"{verb} {job.id} {job.name} ({job.status.value})"


# ------------------------------------------------------------------------- watch


@dataclass(slots=True)
class Watched:
    """What ``watch`` shows of a job, kept up to date from its stream."""

    name: str
    status: str
    attempt_number: int
    max_retries: int
    percent: float | None
    message: str

    @classmethod
    def of(cls, job: JobView) -> Watched:
        progress = job.progress if isinstance(job.progress, Mapping) else {}
        return cls(
            job.name,
            job.status.value,
            job.attempt_number,
            job.max_retries,
            _percent(progress),
            str(progress.get("message") or ""),
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def take(self, message: Mapping[str, Any]) -> None:
        """Apply one stream message (``init`` or an event: docs/realtime.md)."""
        if isinstance(message.get("status"), str):
            self.status = message["status"]
        if isinstance(message.get("attemptNumber"), int):
            self.attempt_number = message["attemptNumber"]
        data = message.get("data")
        kind = message.get("type")
        if kind == "init":
            progress = data.get("progress") if isinstance(data, Mapping) else None
            self._progress(progress)
        elif kind == "progress":
            self._progress(data)
        elif kind == "retried":
            self._progress(None)  # a new attempt starts with no progress of its own

    def _progress(self, progress: Any) -> None:
        self.percent = _percent(progress)
        message = progress.get("message") if isinstance(progress, Mapping) else None
        self.message = str(message or "")

    def line(self) -> str:
        percent = 100.0 if self.status == JobStatus.COMPLETED else self.percent
        filled = 0 if percent is None else round(BAR_WIDTH * min(100.0, percent) / 100)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        shown = "  -%" if percent is None else f"{math.floor(percent):3d}%"
        attempt = f"attempt {self.attempt_number + 1}/{self.max_retries + 1}"
        text = f"{self.name} [{bar}] {shown}  {self.status}  {attempt}"
        return f"{text}  {self.message}" if self.message else text


class Bar:
    """A progress line: on a terminal one line redrawn in place (``\\r``), elsewhere one
    line each time what it shows changes."""

    def __init__(self, out: TextIO, tty: bool, columns: int = 80) -> None:
        self.out = out
        self.tty = tty
        self.columns = columns
        self.last = ""
        self.drawn = 0
        """The length of the line on the terminal, which a shorter one must cover."""

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            line = text[: max(1, self.columns - 1)]  # a wrapped line cannot be redrawn
            self.out.write("\r" + line.ljust(self.drawn))
            self.drawn = len(line)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.tty and self.drawn:
            self.out.write("\n")
            self.out.flush()


def stream_url(url: str, key: str, job_id: str) -> str:
    base = "ws" + url.removeprefix("http")  # http -> ws, https -> wss
    token = urllib.parse.quote(key, safe="")
    return f"{base}/api/v1/realtime/{urllib.parse.quote(job_id, safe='')}?token={token}"


async def _follow(url: str, watched: Watched, show: Callable[[str], None]) -> None:
    """Follow a job stream until it shows the job final, or ends, or fails."""
    try:
        async with trio_websocket.open_websocket_url(url) as ws:
            while not watched.final:
                message = loads(await ws.get_message())
                if isinstance(message, dict):
                    watched.take(message)
                    show(watched.line())
    except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError, ValueError):
        return  # the caller reads the job: that says whether it is final, or why not


async def watch(
    client: AsyncClient, conn: Connection, job_id: str, show: Callable[[str], None]
) -> JobView:
    """The job once final, showing each change on the way: from its WebSocket stream,
    and, should the stream fail, by reading the job (then trying the stream again)."""
    job = await client.get(job_id)
    url = stream_url(conn.url, conn.key, job_id)
    pause = WAIT_READ_FIRST
    while job.status not in FINAL:
        watched = Watched.of(job)
        show(watched.line())
        await _follow(url, watched, show)
        job = await client.get(job_id)
        if job.status not in FINAL and not watched.final:
            await trio.sleep(pause)
            pause = min(WAIT_READ_MAX, pause * 1.5)
    show(Watched.of(job).line())
    return job


def outcome(job: JobView) -> str:
    """The line ``watch`` ends with: the result of a completed job, the error of a dead
    one, the reason of a killed one (the wire's ``result`` holds each)."""
    result = job.result
    if job.status == JobStatus.COMPLETED:
        return "completed" if result is None else f"completed: {_compact(result)}"
    if job.status == JobStatus.DEAD:
        runs = job.attempt_number + 1
        head, said = f"dead after {runs} attempt{'s' if runs > 1 else ''}", "error"
    else:
        head, said = job.status.value, "reason"
    why = result.get(said) if isinstance(result, Mapping) else None
    return head if why is None else f"{head}: {why}"


# ---------------------------------------------------------------------- commands


async def run(args: argparse.Namespace, conn: Connection, job_payload: Any = None) -> int:
    """Run the subcommand; its exit status. ``job_payload``: ``create``'s, as parsed."""
    async with AsyncClient(conn.url, conn.key, conn.space_id) as client:
        match args.action:
            case "create":
                return await _create(client, args, job_payload)
            case "list":
                return await _list(client, args)
            case "get":
                job = await client.get(args.job_id)
                _print(args, job, lambda: "\n".join(details(job)))
            case "kill":
                job = await client.kill(args.job_id, args.reason)
                _print(args, job, lambda: one_line("killed", job))
            case "retry" if args.all_dead:
                return await _retry_dead(client, args)
            case "retry":
                job = await client.retry(args.job_id)
                _print(args, job, lambda: one_line("retried", job))
            case _:
                return await _watch(client, conn, args)
    return 0


def _print(args: argparse.Namespace, job: JobView, human: Callable[[], str]) -> None:
    """A job as ``--json`` asks: its wire form, or else ``human()``."""
    print(json.dumps(job.to_wire()) if args.json else human())


async def _list(client: AsyncClient, args: argparse.Namespace) -> int:
    jobs, total = await client.list(
        status=args.status, name=args.name, limit=args.limit, offset=args.offset
    )
    if args.json:
        print(json.dumps([job.to_wire() for job in jobs]))
    elif not jobs:
        print(f"no jobs (of {total}) at offset {args.offset}" if total else "no jobs")
    else:
        print("\n".join(table(jobs)))
        if args.offset or args.offset + len(jobs) < total:
            print(f"{args.offset + 1}-{args.offset + len(jobs)} of {total} jobs")
    return 0


async def _create(client: AsyncClient, args: argparse.Namespace, job_payload: Any) -> int:
    given = {
        "priority": args.priority,
        "max_retries": args.max_retries,
        "timeout_seconds": args.timeout_seconds,
        "scheduled_for": args.scheduled_for,
        "callback_url": args.callback_url,
        "idempotency_key": args.idempotency_key,
    }
    # Only what was given: the client's defaults are the API's.
    options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    job = await client.create(args.name, job_payload, **options)
    _print(args, job, lambda: one_line("created", job))
    return 0


async def _retry_dead(client: AsyncClient, args: argparse.Namespace) -> int:
    """Retry every job that is dead when the command starts: their ids are read first,
    page by page, since each retry takes a job out of the list being paged."""
    ids: list[str] = []
    seen: set[str] = set()
    offset = 0
    while True:
        jobs, total = await client.list(
            status=JobStatus.DEAD.value, name=args.name, limit=LIST_PAGE, offset=offset
        )
        ids += [job.id for job in jobs if job.id not in seen]
        seen.update(job.id for job in jobs)
        offset += len(jobs)
        if not jobs or offset >= total:
            break

    retried: dict[str, JobView] = {}
    failed: dict[str, Exception] = {}
    limit = trio.CapacityLimiter(RETRY_CONCURRENCY)

    async def retry(job_id: str) -> None:
        async with limit:
            try:
                retried[job_id] = await client.retry(job_id)
            except (EmitError, httpx.TransportError) as error:
                failed[job_id] = error

    async with trio.open_nursery() as nursery:
        for job_id in ids:
            nursery.start_soon(retry, job_id)

    if args.json:
        summary = {
            "retried": [retried[i].to_wire() for i in ids if i in retried],
            "failed": [_failure(i, failed[i]) for i in ids if i in failed],
        }
        print(json.dumps(summary))
    else:
        for job_id in (i for i in ids if i in failed):
            print(f"emit: {job_id} not retried: {_reason(failed[job_id])}", file=sys.stderr)
        print(f"retried {len(retried)} of {len(ids)} dead jobs" if ids else "no dead jobs")
    return REFUSED if failed else 0


def _failure(job_id: str, error: Exception) -> dict[str, Any]:
    if isinstance(error, EmitError):
        return {"id": job_id, "status": error.status, "code": error.code, "message": error.message}
    return {"id": job_id, "status": None, "code": "connection", "message": str(error)}


def _reason(error: Exception) -> str:
    if isinstance(error, EmitError):
        return error.summary()
    return f"connection failed: {error}"


async def _watch(client: AsyncClient, conn: Connection, args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.json:
        job = await watch(client, conn, args.job_id, lambda text: None)
        print(json.dumps(job.to_wire()))
    else:
        bar = Bar(out, out.isatty(), shutil.get_terminal_size().columns)
        try:
            job = await watch(client, conn, args.job_id, bar.show)
        finally:
            bar.end()
        print(outcome(job))
    return 0 if job.status == JobStatus.COMPLETED else REFUSED


# -------------------------------------------------------------------------- main


def main(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``emit jobs`` as parsed; the exit status (the module's docstring)."""
    try:
        conn, job_payload = _checked(args, os.environ if environ is None else environ)
    except UsageError as error:
        print(f"emit: {error}", file=sys.stderr)
        return USAGE
    try:
        return trio.run(run, args, conn, job_payload)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BaseException as error:  # explained in a line, or raised again
        known = _known(error, conn.url)
        if known is None:
            raise
        status, line = known
        print(f"emit: {line}", file=sys.stderr)
        return status


def _checked(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Connection, Any]:
    """What the command needs before it sends anything (`UsageError` if it is missing or
    wrong): the connection, and ``create``'s payload, parsed."""
    if args.action == "retry":
        if args.all_dead == (args.job_id is not None):
            raise UsageError("emit jobs retry takes a job's ID or --all-dead, one of the two")
        if args.name is not None and not args.all_dead:
            raise UsageError("emit jobs retry: --name goes with --all-dead")
    conn = connection(args, environ)
    if _needs_space(args) and conn.space_id is None:
        raise UsageError("no space: give --space or set EMIT_SPACE_ID")
    return conn, payload(args.payload) if args.action == "create" else None


def _known(error: BaseException, url: str) -> tuple[int, str] | None:
    """The exit status and line for an error the command explains, else None."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    match error:
        case InvalidRequest():
            return USAGE, error.summary()
        case EmitError():
            return REFUSED, error.summary()
        case httpx.TransportError():
            return REFUSED, f"cannot reach {url}: {error or type(error).__name__}"
    return None
