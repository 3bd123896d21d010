"""emit: a self-hostable job queue server speaking the emit.run API, on Trio.

The embedding API (see docs/embedding.md)::

    async with emit.open_runtime("emit-data") as rt:
        space = await rt.create_space("email-jobs")
        jobs = rt.space(space.id)
"""

from collections.abc import Awaitable, Callable

import trio

from .client import AsyncClient, Client
from .domain.model import EventType, JobStatus
from .domain.settings import Retention
from .domain.views import Delivery, ItemResult, JobView
from .errors import (
    Conflict,
    EmitError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from .http.settings import HttpSettings
from .runtime import NewToken, Runtime, SpaceJobs, open_runtime
from .store.base import StoreOpenFailed
from .tuning import tune_gc
from .version import __version__
from .worker import AsyncContext, Context, LeaseLost, Worker


async def serve(
    runtime: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    settings: HttpSettings | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP API of an embedded runtime until cancelled (or ``shutdown_trigger``
    returns): ``urls = await nursery.start(partial(emit.serve, rt, port=0))`` — port 0
    picks a free port, and the bound URLs are reported."""
    from .http.server import serve as serve_http  # Quart is imported only when serving

    await serve_http(
        runtime,
        host=host,
        port=port,
        settings=settings,
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )


__all__ = [
    "AsyncClient",
    "AsyncContext",
    "Client",
    "Conflict",
    "Context",
    "Delivery",
    "EmitError",
    "EventType",
    "Forbidden",
    "HttpSettings",
    "InvalidRequest",
    "ItemResult",
    "JobStatus",
    "JobView",
    "LeaseLost",
    "NewToken",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Retention",
    "Runtime",
    "SpaceJobs",
    "StoreOpenFailed",
    "Unauthorized",
    "Unavailable",
    "Worker",
    "__version__",
    "open_runtime",
    "serve",
    "tune_gc",
]
