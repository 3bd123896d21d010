"""The ``emit`` command line: ``serve``, and ``spaces`` / ``tokens`` management that works
on the data directory directly — safe while a server runs on it (SQLite serialises the
writes; the server sees a new key on its first use).

    emit serve [--data DIR] [--host 127.0.0.1] [--port 8787] … (each also EMIT_<FLAG>)
    emit spaces create NAME [--json] | emit spaces list [--json]
    emit tokens create SPACE --name NAME (--scopes a,b | --preset worker) [--json]
    emit tokens list SPACE [--json] | emit tokens revoke SPACE TOKEN_ID
    emit backup DEST [--data DIR]
    emit jobs create|list|get|kill|retry|watch … (over HTTP: emit/jobs_cli.py)
    emit worker MODULE:WORKER [--concurrency N] … (emit/worker_cli.py)

SPACE is a space's id, or its name when no other space has it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from .callbacks.policy import CallbackPolicy
from .clock import Clock
from .domain.records import Space
from .domain.settings import MAX_RETENTION, Retention
from .domain.views import space_to_wire, token_to_wire
from .errors import EmitError, InvalidRequest, NotFound
from .ids import ADMIN_PREFIX, new_key
from .registry import make_space, make_token
from .store.base import Store, StoreOpenFailed, is_postgres_url
from .store.records import Changes
from .store.sqlite import SQLiteStore
from .version import __version__

if TYPE_CHECKING:  # psycopg and the engine only for the commands that use them
    from .cluster.node import NodeConfig, OwnersRouter
    from .runtime import Runtime

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


def store_url(text: str) -> str:
    """``--store``'s value: a PostgreSQL URL (the SQLite store is the data directory's)."""
    if not is_postgres_url(text):
        raise argparse.ArgumentTypeError(
            f"must be a postgresql:// URL (the SQLite store is the data directory's), not {text!r}"
        )
    return text


def store_option(option: str | None) -> str | None:
    """The PostgreSQL store of a command: ``--store``, else ``$EMIT_STORE``, else none
    (the data directory's SQLite file)."""
    text = option or os.environ.get("EMIT_STORE") or None
    if text is not None and not is_postgres_url(text):
        raise StartFailed(f"EMIT_STORE must be a postgresql:// URL, not {text!r}")
    return text


Where = Path | str
"""Where a command's store is: the data directory (its SQLite file), or a PostgreSQL URL."""


async def _with_store(data: Where, work: Any, *, create: bool = False) -> Any:
    store: Store
    if isinstance(data, str):
        from .store.postgres import PostgresStore

        store = PostgresStore(data)
    else:
        check_not_lost(data)
        if not create and not (data / DB_NAME).exists():
            raise NotFound(
                f"no emit data in {data} (check --data, or start emit serve there first)"
            )
        store = SQLiteStore(data / DB_NAME)
    await store.open()
    try:
        return await work(store, Clock())
    finally:
        await store.close()


# ------------------------------------------------------------------ spaces / tokens


async def spaces_create(data: Where, name: str, as_json: bool) -> None:
    async def work(store: Store, clock: Clock) -> None:
        space, public = make_space(name, clock.now())
        await store.commit([Changes(spaces=[space], tokens=[public])])
        if as_json:
            print(json.dumps(_space_json(space)))
        else:
            print(f"space {space.name}: {space.id}\n  public token: {space.public_token}")

    await _with_store(data, work, create=True)


async def spaces_list(data: Where, as_json: bool) -> None:
    async def work(store: Store, clock: Clock) -> None:
        spaces = await store.list_spaces()
        if as_json:
            print(json.dumps({"spaces": [_space_json(space) for space in spaces]}))
        else:
            for space in spaces:
                print(f"{space.id}  {space.public_token}  {space.name}")

    await _with_store(data, work)


async def find_space(store: Store, given: str) -> Space:
    """The space ``given`` names: its id, or else its name when exactly one space has it.
    A name several spaces share is refused with their ids; none found points to
    ``emit spaces list``."""
    space = await store.get_space(given)
    if space is not None:
        return space
    named = [space for space in await store.list_spaces() if space.name == given]
    if len(named) == 1:
        return named[0]
    if named:
        ids = ", ".join(space.id for space in named)
        raise InvalidRequest(f"{len(named)} spaces are named {given!r} ({ids}): give the id")
    raise NotFound(
        f"no space {given!r} in this data directory, by id or name (see emit spaces list)"
    )


async def tokens_create(
    data: Where,
    space_id: str,
    name: str,
    scopes: list[str] | None,
    preset: str | None,
    as_json: bool,
) -> None:
    async def work(store: Store, clock: Clock) -> None:
        space = await find_space(store, space_id)
        token, made = make_token(space.id, name, scopes, preset, clock.now())
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


async def tokens_list(data: Where, space_id: str, as_json: bool) -> None:
    async def work(store: Store, clock: Clock) -> None:
        space = await find_space(store, space_id)
        tokens = await store.list_tokens(space.id)
        if as_json:
            print(json.dumps({"tokens": [token_to_wire(token) for token in tokens]}))
        else:
            for token in tokens:
                state = " (revoked)" if token.revoked_at is not None else ""
                mark = "  (the public token)" if token.public else ""
                print(f"{token.id}  {token.prefix}…  {token.name}{state}{mark}")

    await _with_store(data, work)


async def tokens_revoke(data: Where, space_id: str, token_id: str) -> None:
    async def work(store: Store, clock: Clock) -> None:
        space = await find_space(store, space_id)
        tokens = {token.id: token for token in await store.list_tokens(space.id)}
        if token_id not in tokens:
            raise NotFound(f"no token {token_id!r} in space {space.id} (see emit tokens list)")
        if tokens[token_id].revoked_at is None:
            await store.commit([Changes(revoked_tokens=[(token_id, clock.now())])])
        print(f"revoked {token_id}")

    await _with_store(data, work)


# -------------------------------------------------------------------------- backup


def backup(data: Path, dest: Path) -> None:
    """Write a new data directory at ``dest`` that ``emit serve`` serves as ``data`` was
    when the copy began: its store, copied live (``copy_database``), and its admin key.
    The directory is made beside ``dest`` and renamed into place once complete, so
    ``dest`` is either absent or a whole copy, never a part of one."""
    from .store.backup import NotAStore, copy_database, fsync_path

    check_not_lost(data)
    db = data / DB_NAME
    if not db.is_file() or db.stat().st_size == 0:
        raise StartFailed(f"no emit data in {data} (check --data)")
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise StartFailed(f"{dest} exists and is not empty: back up to a new directory")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Mode 0700, like a fresh key: the copy holds the admin key and every key's hash.
        made = tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    except OSError as error:
        raise StartFailed(f"cannot make {dest}: {error.strerror or error}") from None
    partial = Path(made)
    try:
        try:
            pages = copy_database(db, partial / DB_NAME)
        except NotAStore as error:
            raise StartFailed(f"{error} (check --data)") from None
        except sqlite3.Error as error:
            raise StartFailed(f"cannot back up {db}: {error}") from None
        admin = data / ADMIN_FILE
        if admin.exists():
            _save_admin(partial, admin.read_text().strip())
            fsync_path(partial / ADMIN_FILE)
        fsync_path(partial)
        try:
            os.rename(partial, dest)  # replaces an empty directory; refuses a full one
        except OSError as error:
            raise StartFailed(f"cannot make {dest}: {error.strerror}") from None
        fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = (dest / DB_NAME).stat().st_size
    kept = f" and {ADMIN_FILE}" if (dest / ADMIN_FILE).exists() else ""
    print(f"backed up {data} to {dest}: {DB_NAME} ({pages} pages, {size:,} bytes){kept}")


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


def metrics_token(option: str | None) -> str | None:
    """The token that may read ``GET /metrics``: ``--metrics-token``, else
    ``$EMIT_METRICS_TOKEN``, else none (then only the admin key may)."""
    token = option if option is not None else os.environ.get("EMIT_METRICS_TOKEN", "")
    return token.strip() or None


def _cluster_flags(run: argparse.ArgumentParser) -> None:
    from .http.settings import MIN_SECRET

    def secret(text: str) -> str:
        # The value is never echoed: an error line must not print the secret.
        if text.strip() and len(text.strip()) < MIN_SECRET:
            raise argparse.ArgumentTypeError(f"must have {MIN_SECRET} characters at least")
        return text.strip()

    run.add_argument(
        "--node-id",
        help="this node's name in the cluster (with --store): keep it stable across "
        "restarts (default: the host's name and the port)",
    )
    run.add_argument(
        "--node-url",
        help="where the other nodes reach this one, http://HOST:PORT (with --store; "
        "default: the URL it serves, with the host's name for 0.0.0.0)",
    )
    run.add_argument(
        "--ownership-lease",
        type=_number(0, above=True),
        default=10.0,
        metavar="SECONDS",
        help="how long a node holds a space without renewing: a dead node's spaces move "
        "after this long (with --store)",
    )
    run.add_argument(
        "--cluster-secret",
        type=secret,
        metavar="SECRET",
        help="the secret the nodes of a cluster share to forward requests to each other "
        f"({MIN_SECRET} characters at least; without it, nothing is forwarded)",
    )


def _default_node_id(port: int) -> str:
    """A node's id when ``--node-id`` is not given: the host's name and the port, stable
    across restarts (a node that comes back gets its spaces back); a fresh one for a
    port picked at random."""
    name = socket.gethostname()
    return f"{name}:{port}" if port else f"{name}:{secrets.token_hex(4)}"


def _node_url(served: str) -> str:
    """Where the other nodes reach this one, when ``--node-url`` is not given: the URL it
    serves, with the host's name for an address of every interface."""
    for every in ("0.0.0.0", "[::]"):
        served = served.replace(every, socket.gethostname())
    return served


async def _member(
    rt: Runtime,
    node: NodeConfig,
    router: OwnersRouter,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[None],
) -> None:
    """Be a node of the cluster until the server stops: then leave first, so the other
    nodes claim this node's spaces at once, while requests in flight finish."""
    from .cluster.node import joined

    async with joined(rt, node, router):
        task_status.started()
        await shutdown.wait()


def cluster_secret(option: str | None) -> str | None:
    """The cluster secret (``--cluster-secret``, else ``$EMIT_CLUSTER_SECRET``), or None
    when not set or empty."""
    return option or None


def _save_admin(data: Path, key: str) -> None:
    fd = os.open(data / ADMIN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")


async def serve(args: argparse.Namespace) -> None:
    from .http.server import serve as serve_http
    from .http.settings import HttpSettings
    from .runtime import open_runtime
    from .serverlog import configure

    configure(args.log_level, args.log_format)
    data = data_dir(args.data)
    if args.store is None:
        check_not_lost(data)
    admin_key, admin_new = _admin_key(data)
    settings = HttpSettings(
        admin_key=admin_key,
        max_body=args.max_body,
        rate=args.rate_limit,
        key_cache_seconds=args.key_cache_seconds,
        send_timeout=args.send_timeout,
        metrics_token=metrics_token(args.metrics_token),
        cluster_secret=cluster_secret(args.cluster_secret),
    )
    policy = callback_policy(args)
    shutdown = trio.Event()

    async def shutdown_trigger() -> None:
        await shutdown.wait()

    node_id = (args.node_id or _default_node_id(args.port)) if args.store else None
    async with (
        open_runtime(
            args.store or data,
            node=node_id,
            synchronous=args.synchronous,
            allow_private_callbacks=args.allow_private_callbacks,
            callback_policy=policy,
            retention=retention(args),
        ) as rt,
        trio.open_nursery() as nursery,
    ):
        router = None
        if node_id is not None:
            from .cluster.node import OwnersRouter

            router = OwnersRouter(rt, node_id)

        async def http(task_status: trio.TaskStatus[list[str]]) -> None:
            await serve_http(
                rt,
                host=args.host,
                port=args.port,
                settings=settings,
                shutdown_trigger=shutdown_trigger,
                graceful_timeout=args.grace,
                router=router,
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
        node_line = None
        if node_id is not None and router is not None:
            from .cluster.node import NodeConfig

            node = NodeConfig(
                node_id,
                args.node_url or _node_url(urls[0]),
                args.ownership_lease,
                settings.cluster_secret,
            )
            await nursery.start(_member, rt, node, router, shutdown)
            forwarding = "on" if settings.cluster_secret else "off: no --cluster-secret"
            node_line = f"  node {node.id} at {node.url}  (forwarding {forwarding})"
        # Only now that the server is up is anything made that must be shown once.
        welcome: list[str] = []
        if admin_new:
            data.mkdir(parents=True, exist_ok=True)  # the SQLite store made it; PostgreSQL not
            _save_admin(data, admin_key)
            welcome.append(f"  admin key     {admin_key}  (saved in {data / ADMIN_FILE})")
        seed = None
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
            seed = (space.id, producer.key, worker.key)
        base = urls[0].replace("0.0.0.0", "127.0.0.1")
        if args.store:
            from .store.postgres import redacted

            kept = f"store: {redacted(args.store)}"
        else:
            kept = f"data: {data}"
        print(f"emit {__version__} serving {base}  ({kept})", flush=True)
        print(f"  dashboard: {base}/  (sign in with the admin key)", flush=True)
        if node_line is not None:
            print(node_line, flush=True)
        if welcome:
            print("First start: shown this once.", flush=True)
            for line in welcome:
                print(line, flush=True)
        for space in await rt.list_spaces():
            print(f"  space {space.name}: {space.id}", flush=True)
        if seed is not None:
            print(first_steps(base, *seed), flush=True)
    print("emit stopped", flush=True)


def first_steps(url: str, space_id: str, producer_key: str, worker_key: str) -> str:
    """What the first start prints after the keys: the variables the README and the docs
    use, ready to paste, a first job to make with them, and where to read on."""
    return "\n".join(
        [
            "",
            "Paste this into a shell (the names the README and docs/ use):",
            f"  export EMIT_URL={url} EMIT_SPACE_ID={space_id} "
            f"EMIT_PRODUCER_KEY={producer_key} EMIT_WORKER_KEY={worker_key}",
            "Then make a first job:",
            '  curl -s -X POST "$EMIT_URL/api/v1/spaces/$EMIT_SPACE_ID/jobs" '
            '-H "x-api-key: $EMIT_PRODUCER_KEY" -H "content-type: application/json" '
            """-d '{"name": "hello", "payload": {"to": "world"}}'""",
            "Docs: README.md and docs/ (api.md, cli.md, operations.md) in emit's source; "
            f"the API as OpenAPI: {url}/api/v1/openapi.json",
        ]
    )


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


# ---------------------------------------------------------------------------- logs


def add_log_flags(run: argparse.ArgumentParser) -> None:
    from .serverlog import FORMATS, LEVELS

    run.add_argument(
        "--log-level",
        default="info",
        choices=LEVELS,
        help="the least a log line must be to be written; info writes a line per request",
    )
    run.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="text lines, or one JSON object a line (on stderr)",
    )


# ---------------------------------------------------------------------------- main


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit status 2, like every refusal of the command
    line (argparse's own prints the whole usage first).

    A parser with an ``env_prefix`` (``emit serve``'s) also takes each of its options
    from the environment: see `env_name` and `defaults_from_environment`."""

    env_prefix: str | None = None

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self.env_prefix is not None:
            defaults_from_environment(self, self.env_prefix, os.environ)
        return super().parse_known_args(args, namespace)


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


def _number(
    low: float, *, above: bool = False, high: float | None = None
) -> Callable[[str], float]:
    """An argument type: a finite number at least ``low`` (or ``above`` it), and at most
    ``high`` when given."""
    wanted = f"a number {'above' if above else 'of at least'} {low:g}"
    if high is not None:
        wanted += f" and at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if (
            not math.isfinite(value)
            or value < low
            or (above and value == low)
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value

    return parse


# ------------------------------------------------- the environment, and what --help says

ENV_PREFIX = "EMIT_"
"""Every ``emit serve`` option may also be set as ``EMIT_`` + its long name in capitals,
dashes as underscores: ``--port`` is ``EMIT_PORT``, ``--callback-tries`` is
``EMIT_CALLBACK_TRIES``. A flag on the command line wins over its variable."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_name(action: argparse.Action, prefix: str = ENV_PREFIX) -> str:
    """The variable of an option: derived from its long name (argparse's ``dest``), so a
    flag added to ``emit serve`` has its variable with nothing more to write."""
    return prefix + action.dest.upper()


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def defaults_from_environment(
    parser: argparse.ArgumentParser, prefix: str, environ: Mapping[str, str]
) -> None:
    """Make each option's variable, when set and not empty, its default: checked as the
    flag itself would be, and refused the same way (one line, exit status 2)."""
    for action in _options(parser):
        name = env_name(action, prefix)
        text = environ.get(name, "")
        if text:
            action.default = _env_value(parser, action, name, text)


def _env_value(
    parser: argparse.ArgumentParser, action: argparse.Action, name: str, text: str
) -> Any:
    if action.nargs == 0:  # a switch: --allow-private-callbacks
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            parser.error(f"environment variable {name}: must be 1, true, yes or on "
                         f"(or 0, false, no, off), not {text!r}")  # fmt: skip
        return word in _TRUE
    value: Any = text
    if callable(action.type):
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
            parser.error(f"environment variable {name}: {error}")
    if action.choices is not None and value not in action.choices:
        wanted = ", ".join(map(str, action.choices))
        parser.error(f"environment variable {name}: must be one of {wanted}, not {text!r}")
    return value


def _shown(value: Any) -> str:
    if value is False:
        return "off"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def document_defaults(parser: argparse.ArgumentParser) -> None:
    """Give every option of ``parser`` and of its subcommands its default in ``--help``
    (unless its help already says it), and each option of a parser with an
    ``env_prefix`` its variable."""
    prefix = getattr(parser, "env_prefix", None)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                document_defaults(sub)
            continue
        if not action.option_strings or action.dest in {"help", "version"}:
            continue
        notes = []
        said = action.help or ""
        if action.required:
            notes.append("required")
        elif "default" not in said and "required" not in said:
            shown = "none" if action.default is None else _shown(action.default)
            notes.append(f"default: {shown}")
        if prefix is not None:
            notes.append(f"env {env_name(action, prefix)}")
        if notes:
            action.help = f"{action.help or ''} ({'; '.join(notes)})".replace("%", "%%").strip()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="emit", description="A self-hostable job queue.")
    parser.add_argument("--version", action="version", version=f"emit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_data(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data", help=f"the data directory (default: $EMIT_DATA, else ./{DEFAULT_DATA})"
        )
        p.add_argument(
            "--store",
            type=store_url,
            help="the PostgreSQL store to work on instead of the data directory's "
            "(default: $EMIT_STORE, else none)",
        )
        return p

    run = commands.add_parser("serve", help="run the HTTP server", description="Run the HTTP "
                              "API on the data directory. Every flag may also be set by its "
                              "environment variable; a flag given wins.")  # fmt: skip
    run.env_prefix = ENV_PREFIX
    run.add_argument(
        "--data", help=f"the data directory, made if missing; default ./{DEFAULT_DATA}"
    )
    run.add_argument(
        "--store",
        type=store_url,
        help="a PostgreSQL database to keep everything in (postgresql://USER:PASSWORD@HOST"
        "/DB), instead of the data directory's SQLite file; the data directory then holds "
        "only the admin key (default: none)",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for all")
    # Every number is checked here, so a bad one is refused before anything is made.
    run.add_argument(
        "--port", type=_integer(0, 65535), default=8787, help="port to listen on; 0 picks one"
    )
    run.add_argument(
        "--max-body", type=_integer(1), default=1024 * 1024, help="bytes a request body may have"
    )
    run.add_argument(
        "--rate-limit", type=_number(0, above=True), default=1000.0, help="requests/s per key"
    )
    run.add_argument(
        "--key-cache-seconds",
        type=_number(0),
        default=1.0,
        help="seconds a looked-up key is trusted without asking the store",
    )
    run.add_argument(
        "--grace", type=_number(0), default=10.0, help="seconds for requests in flight on stop"
    )
    run.add_argument(
        "--send-timeout",
        type=_number(0, above=True),
        default=30.0,
        help="seconds one write to a client may take before it is dropped",
    )
    run.add_argument(
        "--synchronous",
        default="FULL",
        choices=["FULL", "NORMAL", "EXTRA"],
        help="SQLite's synchronous: FULL survives power loss",
    )
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
    add_log_flags(run)
    run.add_argument(
        "--metrics-token",
        help="a token that may read GET /metrics, besides the admin key",
    )
    _retention_flags(run)
    _cluster_flags(run)

    spaces = commands.add_parser("spaces", help="manage spaces").add_subparsers(
        dest="action", required=True
    )
    create = with_data(spaces.add_parser("create", help="make a space and its public token"))
    create.add_argument("name", help="the space's name, 1 to 200 characters")
    create.add_argument("--json", action="store_true", help="print JSON")
    listing = with_data(spaces.add_parser("list", help="every space, with its public token"))
    listing.add_argument("--json", action="store_true", help="print JSON")

    tokens = commands.add_parser("tokens", help="manage keys").add_subparsers(
        dest="action", required=True
    )
    space_help = "the space: its id, or its name if no other space has it"
    make = with_data(tokens.add_parser("create", help="make a key (shown once)"))
    make.add_argument("space_id", metavar="SPACE", help=space_help)
    make.add_argument("--name", required=True, help="the key's name")
    grant = make.add_mutually_exclusive_group(required=True)
    grant.add_argument(
        "--scopes", help="comma-separated, e.g. jobs:create,jobs:read (this or --preset required)"
    )
    grant.add_argument(
        "--preset", choices=["worker"], help="a named set of scopes (this or --scopes required)"
    )
    make.add_argument("--json", action="store_true", help="print JSON")
    shown = with_data(tokens.add_parser("list", help="a space's keys (prefixes only)"))
    shown.add_argument("space_id", metavar="SPACE", help=space_help)
    shown.add_argument("--json", action="store_true", help="print JSON")
    revoke = with_data(tokens.add_parser("revoke", help="revoke a key"))
    revoke.add_argument("space_id", metavar="SPACE", help=space_help)
    revoke.add_argument("token_id", help="the key's id (emit tokens list shows it)")

    copy = with_data(
        commands.add_parser("backup", help="copy the data directory, live, to a new directory DEST")
    )
    copy.add_argument("dest", help="the new data directory (must not exist, or be empty)")

    # emit jobs: a server's jobs over its HTTP API, with exit statuses of its own.
    from .jobs_cli import add_jobs_parser

    add_jobs_parser(commands)

    # emit worker: a program's Worker, run against a server.
    from .worker_cli import add_worker_parser

    add_worker_parser(commands, add_log_flags)

    document_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "jobs":
        from .jobs_cli import main as jobs_main

        return jobs_main(args)
    if args.command == "worker":
        from .worker_cli import main as worker_main

        return worker_main(args)
    data = data_dir(getattr(args, "data", None))
    try:
        if args.command == "serve":
            trio.run(serve, args)
            return 0
        if args.command == "backup":
            if store_option(None) is not None:
                raise StartFailed(
                    "emit backup copies the SQLite store of a data directory; back up a "
                    "PostgreSQL store with PostgreSQL's own tools (pg_dump, or base backups "
                    "with WAL archiving)"
                )
            backup(data, Path(args.dest))
            return 0
        where: Where = store_option(args.store) or data
        if args.command == "spaces" and args.action == "create":
            trio.run(spaces_create, where, args.name, args.json)
        elif args.command == "spaces":
            trio.run(spaces_list, where, args.json)
        elif args.action == "create":
            scopes = None if args.scopes is None else [s for s in args.scopes.split(",") if s]
            trio.run(tokens_create, where, args.space_id, args.name, scopes, args.preset, args.json)
        elif args.action == "list":
            trio.run(tokens_list, where, args.space_id, args.json)
        else:
            trio.run(tokens_revoke, where, args.space_id, args.token_id)
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
