"""Serving the app with Hypercorn's trio worker, as one child in the caller's nursery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from ..runtime import Runtime
from .app import create_app
from .settings import HttpSettings


async def serve(
    runtime: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    settings: HttpSettings | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 10.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API until cancelled or ``shutdown_trigger`` returns. Reports the
    bound URLs (port 0 picks a free port)."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75
    app = create_app(runtime, settings or HttpSettings())
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
