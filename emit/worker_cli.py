"""``emit worker MODULE:WORKER``: run a `Worker` a program defines, until SIGINT or
SIGTERM (a second one stops at once)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

import httpx

from .cli import _integer, _leaf, _number
from .errors import EmitError
from .worker import GRACE, POLL_WAIT, Worker


def add_worker_parser(commands: Any, add_log_flags: Any) -> None:
    """``emit worker`` on the ``emit`` parser's subcommands."""
    run = commands.add_parser(
        "worker",
        help="run a worker's handlers: emit worker MODULE:WORKER",
        description="Import MODULE, take its Worker named WORKER (MODULE:WORKER, as "
        "myapp.jobs:worker), and run its handlers against a server until SIGINT or "
        "SIGTERM: running handlers get --grace seconds to finish; a second signal stops "
        "at once. --url, --key and --space default from the environment.",
    )
    run.add_argument("target", metavar="MODULE:WORKER", help="where the Worker is")
    run.add_argument(
        "--concurrency", type=_integer(1), default=8, help="handlers running at once (default 8)"
    )
    run.add_argument("--url", help="the server's base URL (default: $EMIT_URL)")
    run.add_argument("--key", help="a worker key (default: $EMIT_WORKER_KEY)")
    run.add_argument("--space", metavar="ID", help="the space's id (default: $EMIT_SPACE_ID)")
    run.add_argument(
        "--grace",
        type=_number(0),
        help=f"seconds running handlers get after a stop (default: the Worker's, {GRACE:g})",
    )
    run.add_argument(
        "--poll-wait",
        type=_number(0, high=60),
        help=f"seconds a poll waits for a job, up to 60 (default: the Worker's, {POLL_WAIT:g})",
    )
    add_log_flags(run)


def load(target: str) -> Worker:
    """The `Worker` at ``MODULE:NAME`` (NAME may be dotted), importing MODULE from the
    current directory as well as the path; ValueError saying what is wrong."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target!r} is not MODULE:WORKER (as myapp.jobs:worker)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name}: {error}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no {attribute}") from None
    if not isinstance(found, Worker):
        raise ValueError(f"{target} is a {type(found).__name__}, not an emit.Worker")
    return found


def main(args: argparse.Namespace) -> int:
    from .serverlog import configure

    try:
        worker = load(args.target)
    except ValueError as error:
        print(f"emit: {error}", file=sys.stderr)
        return 2
    worker.url = args.url or worker.url
    worker.key = args.key or worker.key
    worker.space = args.space or worker.space
    if args.grace is not None:
        worker.grace = args.grace
    if args.poll_wait is not None:
        worker.poll_wait = args.poll_wait
    configure(args.log_level, args.log_format)
    try:
        worker.run(concurrency=args.concurrency)
    except (EmitError, ValueError, httpx.HTTPError) as error:
        print(f"emit: {_message(error)}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        known = group.subgroup(lambda e: isinstance(e, EmitError | ValueError | httpx.HTTPError))
        if known is None:
            raise
        print(f"emit: {_message(_leaf(known))}", file=sys.stderr)
        return 1
    return 0


def _message(error: BaseException) -> str:
    if isinstance(error, EmitError):
        return error.summary()
    return str(error) or type(error).__name__
