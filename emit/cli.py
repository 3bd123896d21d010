"""The ``emit`` command line: ``serve``, and ``spaces`` / ``tokens`` management that works
on the data directory directly — safe while a server runs on it (SQLite serialises the
writes; the server sees a new key on its first use).

    emit serve [--data DIR] [--host 127.0.0.1] [--port 8787]
    emit spaces create NAME [--json] | emit spaces list [--json]
    emit tokens create SPACE_ID --name NAME (--scopes a,b | --preset worker) [--json]
    emit tokens list SPACE_ID [--json] | emit tokens revoke SPACE_ID TOKEN_ID
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from .callbacks.policy import CallbackPolicy
from .clock import Clock
from .domain.records import Space
from .domain.settings import MAX_RETENTION, Retention
from .domain.views import space_to_wire, token_to_wire
from .errors import EmitError, NotFound
from .ids import ADMIN_PREFIX, new_key
from .registry import make_space, make_token
from .store.base import StoreOpenFailed
from .store.records import Changes
from .store.sqlite import SQLiteStore
from .version import __version__

DEFAULT_DATA = "emit-data"
DB_NAME = "emit.db"
ADMIN_FILE = "admin.key"


def data_dir(option: str | None) -> Path:
    return Path(option or os.environ.get("EMIT_DATA") or DEFAULT_DATA)


def _space_json(space: Space) -> dict[str, Any]:
    """The CLI's --json shape of a space: the wire form less its time."""
    wire = space_to_wire(space)
    del wire["createdAt"]
    return wire


def check_not_lost(data: Path) -> None:
    """Refuse a data directory that has been used (its ``admin.key`` is there) but whose
    store is missing or empty: starting over would make a new space and keys, and the
    old data would be silently gone."""
    db = data / DB_NAME
    if not (data / ADMIN_FILE).exists():
        return  # never used by emit serve, or its admin key comes from the environment
    try:
        size = db.stat().st_size
    except FileNotFoundError:
        state = "is missing"
    else:
        if size > 0:
            return
        state = "is empty"
    raise StartFailed(
        f"{db} {state}, but {data / ADMIN_FILE} says this directory was used before: "
        f"refusing to start over with a new store (restore {DB_NAME} from a backup, or "
        f"move the directory away to start afresh)"
    )


async def _with_store(data: Path, work: Any, *, create: bool = False) -> Any:
    check_not_lost(data)
    if not create and not (data / DB_NAME).exists():
        raise NotFound(f"no emit data in {data} (check --data, or start emit serve there first)")
    store = SQLiteStore(data / DB_NAME)
    await store.open()
    try:
        return await work(store, Clock())
    finally:
        await store.close()


# ------------------------------------------------------------------ spaces / tokens


async def spaces_create(data: Path, name: str, as_json: bool) -> None:
    async def work(store: SQLiteStore, clock: Clock) -> None:
        space, public = make_space(name, clock.now())
        await store.commit([Changes(spaces=[space], tokens=[public])])
        if as_json:
            print(json.dumps(_space_json(space)))
        else:
            print(f"space {space.name}: {space.id}\n  public token: {space.public_token}")

    await _with_store(data, work, create=True)


async def spaces_list(data: Path, as_json: bool) -> None:
    async def work(store: SQLiteStore, clock: Clock) -> None:
        spaces = await store.list_spaces()
        if as_json:
            print(json.dumps({"spaces": [_space_json(space) for space in spaces]}))
        else:
            for space in spaces:
                print(f"{space.id}  {space.name}")

    await _with_store(data, work)


async def _space_or_404(store: SQLiteStore, space_id: str) -> Space:
    space = await store.get_space(space_id)
    if space is None:
        raise NotFound(f"no space {space_id!r} in this data directory")
    return space


async def tokens_create(
    data: Path,
    space_id: str,
    name: str,
    scopes: list[str] | None,
    preset: str | None,
    as_json: bool,
) -> None:
    async def work(store: SQLiteStore, clock: Clock) -> None:
        await _space_or_404(store, space_id)
        token, made = make_token(space_id, name, scopes, preset, clock.now())
        await store.commit([Changes(tokens=[token])])
        if as_json:
            print(
                json.dumps(
                    {
                        "id": made.id,
                        "name": made.name,
                        "scopes": sorted(made.scopes),
                        "key": made.key,
                    }
                )
            )
        else:
            print(f"token {made.name}: {made.id}\n  scopes: {' '.join(sorted(made.scopes))}")
            print(f"  key (shown once): {made.key}")

    await _with_store(data, work)


async def tokens_list(data: Path, space_id: str, as_json: bool) -> None:
    async def work(store: SQLiteStore, clock: Clock) -> None:
        await _space_or_404(store, space_id)
        tokens = await store.list_tokens(space_id)
        if as_json:
            print(json.dumps({"tokens": [token_to_wire(token) for token in tokens]}))
        else:
            for token in tokens:
                state = " (revoked)" if token.revoked_at is not None else ""
                print(f"{token.id}  {token.prefix}…  {token.name}{state}")

    await _with_store(data, work)


async def tokens_revoke(data: Path, space_id: str, token_id: str) -> None:
    async def work(store: SQLiteStore, clock: Clock) -> None:
        await _space_or_404(store, space_id)
        tokens = {token.id: token for token in await store.list_tokens(space_id)}
        if token_id not in tokens:
            raise NotFound(f"no token {token_id!r} in space {space_id}")
        if tokens[token_id].revoked_at is None:
            await store.commit([Changes(revoked_tokens=[(token_id, clock.now())])])
        print(f"revoked {token_id}")

    await _with_store(data, work)


# --------------------------------------------------------------------------- serve


def callback_policy(args: argparse.Namespace) -> CallbackPolicy:
    """The webhook retry policy ``emit serve``'s flags ask for (ValueError if bad)."""
    return CallbackPolicy(
        tries=args.callback_tries,
        first_delay=args.callback_first_delay,
        factor=args.callback_factor,
        timeout=args.callback_timeout,
    )


def retention(args: argparse.Namespace) -> Retention:
    """The server's default retention, from ``--retain-*`` (0: keep forever)."""
    return Retention(
        completed=args.retain_completed or None,
        dead=args.retain_dead or None,
        killed=args.retain_killed or None,
    )


def _retention_flags(run: argparse.ArgumentParser) -> None:
    defaults = Retention()
    for status, seconds in (
        ("completed", defaults.completed),
        ("dead", defaults.dead),
        ("killed", defaults.killed),
    ):
        run.add_argument(
            f"--retain-{status}",
            type=_integer(0, MAX_RETENTION),
            default=seconds,
            metavar="SECONDS",
            help=f"seconds a {status} job is kept, for spaces without a retention setting "
            f"(0: forever; default {seconds})",
        )


def _admin_key(data: Path) -> tuple[str, bool]:
    """The admin key, and whether it is new (then the caller saves it with `_save_admin`
    once the server is up, so a start that fails leaves no key nobody has seen)."""
    from_env = os.environ.get("EMIT_ADMIN_KEY")
    if from_env:
        return from_env, False
    path = data / ADMIN_FILE
    if path.exists():
        return path.read_text().strip(), False
    return new_key(ADMIN_PREFIX), True


def _save_admin(data: Path, key: str) -> None:
    fd = os.open(data / ADMIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")


async def serve(args: argparse.Namespace) -> None:
    from .http.server import serve as serve_http
    from .http.settings import HttpSettings
    from .runtime import open_runtime

    data = data_dir(args.data)
    check_not_lost(data)
    admin_key, admin_new = _admin_key(data)
    settings = HttpSettings(
        admin_key=admin_key,
        max_body=args.max_body,
        rate=args.rate_limit,
        key_cache_seconds=args.key_cache_seconds,
        send_timeout=args.send_timeout,
    )
    policy = callback_policy(args)
    shutdown = trio.Event()

    async def shutdown_trigger() -> None:
        await shutdown.wait()

    async with (
        open_runtime(
            data,
            synchronous=args.synchronous,
            allow_private_callbacks=args.allow_private_callbacks,
            callback_policy=policy,
            retention=retention(args),
        ) as rt,
        trio.open_nursery() as nursery,
    ):

        async def http(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve_http(
                rt,
                host=args.host,
                port=args.port,
                settings=settings,
                shutdown_trigger=shutdown_trigger,
                graceful_timeout=args.grace,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()  # served out: stop listening for signals

        # Signals are handled from before the first line is printed: whoever reads
        # the URL may stop the server at once.
        await nursery.start(_signals, rt, shutdown)
        try:
            urls: list[str] = await nursery.start(http)
        except (OSError, BaseExceptionGroup) as error:
            cause = _leaf(error)
            if not isinstance(cause, OSError):
                raise
            raise StartFailed(f"cannot listen on {args.host}:{args.port}: {cause}") from None
        # Only now that the server is up is anything made that must be shown once.
        welcome: list[str] = []
        if admin_new:
            _save_admin(data, admin_key)
            welcome.append(f"  admin key     {admin_key}  (saved in {data / ADMIN_FILE})")
        if not await rt.list_spaces():
            space = await rt.create_space("default")
            producer = await rt.create_token(
                space.id, name="producer", scopes=["jobs:create", "jobs:read"]
            )
            worker = await rt.create_token(space.id, name="worker", preset="worker")
            welcome += [
                f"  space id      {space.id}",
                f"  producer key  {producer.key}   (jobs:create jobs:read)",
                f"  worker key    {worker.key}   (worker preset)",
                f"  public token  {space.public_token}   (jobs:read:progress)",
            ]
        base = urls[0].replace("0.0.0.0", "127.0.0.1")
        print(f"emit {__version__} serving {base}  (data: {data})", flush=True)
        if welcome:
            print("First start: shown this once.", flush=True)
            for line in welcome:
                print(line, flush=True)
        for space in await rt.list_spaces():
            print(f"  space {space.name}: {space.id}", flush=True)
    print("emit stopped", flush=True)


def _leaf(error: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class StartFailed(Exception):
    """The command could not start; the message says why, in one line."""


async def _signals(
    rt: Any, shutdown: trio.Event, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            if shutdown.is_set():
                os._exit(1)  # a second signal: leave at once
            print("stopping: finishing requests in flight (signal again to quit now)", flush=True)
            shutdown.set()
            rt.hub.end_all(1001)  # WebSockets close with "going away"
            await rt.release_pollers()


# ---------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit status 2, like every refusal of the command
    line (argparse's own prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argument type: an integer from ``low`` (to ``high``)."""
    wanted = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value

    return parse


def _number(low: float, *, above: bool = False) -> Callable[[str], float]:
    """An argument type: a finite number at least ``low`` (or ``above`` it)."""
    wanted = f"a number {'above' if above else 'of at least'} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emit", description="A self-hostable job queue.")
    parser.add_argument("--version", action="version", version=f"emit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_data(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data", help=f"data directory (default $EMIT_DATA or ./{DEFAULT_DATA})")
        return p

    run = with_data(commands.add_parser("serve", help="run the HTTP server"))
    run.add_argument("--host", default="127.0.0.1")
    # Every number is checked here, so a bad one is refused before anything is made.
    run.add_argument("--port", type=_integer(0, 65535), default=8787)
    run.add_argument(
        "--max-body", type=_integer(1), default=1024 * 1024, help="bytes (default 1 MiB)"
    )
    run.add_argument(
        "--rate-limit", type=_number(0, above=True), default=1000.0, help="requests/s per key"
    )
    run.add_argument("--key-cache-seconds", type=_number(0), default=1.0)
    run.add_argument(
        "--grace", type=_number(0), default=10.0, help="seconds for requests in flight"
    )
    run.add_argument(
        "--send-timeout",
        type=_number(0, above=True),
        default=30.0,
        help="seconds one write to a client may take before it is dropped",
    )
    run.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "EXTRA"])
    run.add_argument(
        "--allow-private-callbacks",
        action="store_true",
        help="deliver webhooks to loopback and private addresses too",
    )
    run.add_argument(
        "--callback-tries",
        type=_integer(1, 100),
        default=8,
        help="webhook tries in all, the first included",
    )
    run.add_argument(
        "--callback-first-delay",
        type=_number(0),
        default=1.0,
        help="seconds before the first retry",
    )
    run.add_argument(
        "--callback-factor", type=_number(1), default=3.0, help="each wait, times the one before"
    )
    run.add_argument(
        "--callback-timeout", type=_number(0, above=True), default=10.0, help="seconds a try"
    )
    _retention_flags(run)

    spaces = commands.add_parser("spaces", help="manage spaces").add_subparsers(
        dest="action", required=True
    )
    create = with_data(spaces.add_parser("create"))
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    listing = with_data(spaces.add_parser("list"))
    listing.add_argument("--json", action="store_true")

    tokens = commands.add_parser("tokens", help="manage keys").add_subparsers(
        dest="action", required=True
    )
    make = with_data(tokens.add_parser("create"))
    make.add_argument("space_id")
    make.add_argument("--name", required=True)
    grant = make.add_mutually_exclusive_group(required=True)
    grant.add_argument("--scopes", help="comma-separated, e.g. jobs:create,jobs:read")
    grant.add_argument("--preset", choices=["worker"])
    make.add_argument("--json", action="store_true")
    shown = with_data(tokens.add_parser("list"))
    shown.add_argument("space_id")
    shown.add_argument("--json", action="store_true")
    revoke = with_data(tokens.add_parser("revoke"))
    revoke.add_argument("space_id")
    revoke.add_argument("token_id")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = data_dir(getattr(args, "data", None))
    try:
        if args.command == "serve":
            trio.run(serve, args)
        elif args.command == "spaces" and args.action == "create":
            trio.run(spaces_create, data, args.name, args.json)
        elif args.command == "spaces":
            trio.run(spaces_list, data, args.json)
        elif args.action == "create":
            scopes = None if args.scopes is None else [s for s in args.scopes.split(",") if s]
            trio.run(tokens_create, data, args.space_id, args.name, scopes, args.preset, args.json)
        elif args.action == "list":
            trio.run(tokens_list, data, args.space_id, args.json)
        else:
            trio.run(tokens_revoke, data, args.space_id, args.token_id)
    except EmitError as error:
        print(f"emit: {error.message}", file=sys.stderr)
        return 2
    except (StartFailed, StoreOpenFailed, ValueError) as error:
        print(f"emit: {error}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        known = group.subgroup(
            lambda e: isinstance(e, StartFailed | StoreOpenFailed | EmitError | ValueError)
        )
        if known is None:
            raise
        print(f"emit: {_leaf(known)}", file=sys.stderr)
        return 2
    return 0
