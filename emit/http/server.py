"""Serving the app with Hypercorn's trio worker, as one child in the caller's nursery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
from hypercorn.protocol import ws_stream
from hypercorn.trio import serve as hypercorn_serve
from wsproto.extensions import PerMessageDeflate

from ..runtime import Runtime
from ..tuning import tune_gc
from .app import FORWARDER, create_app
from .connection import EmitConfig, use_emit_connections
from .settings import HttpSettings

if TYPE_CHECKING:
    from ..cluster.forwarding import Forwarder, Router


class _NoDeflate(PerMessageDeflate):
    """permessage-deflate, declined: every offer is refused, so no WebSocket compresses."""

    def accept(self, offer: str) -> None:
        return None


def decline_permessage_deflate() -> None:
    """Make Hypercorn refuse the permessage-deflate extension browsers always offer.

    Hypercorn accepts it whenever a client offers it, with no setting to turn it off
    (pgjones/hypercorn#307): its handshake builds ``[PerMessageDeflate()]`` from the name
    in its ``ws_stream`` module, so that name is pointed at a class that declines. The
    streams send small JSON messages, one at a time: compressing them costs a zlib
    compressor per socket (~90 KiB, twice what the rest of a subscriber holds) and ~5 us
    a message, to save ~150 bytes (docs/realtime.md). Process-wide, like the collector
    tuning below; tests/realtime/test_streams.py fails if Hypercorn changes how it
    negotiates."""
    setattr(ws_stream, "PerMessageDeflate", _NoDeflate)  # noqa: B010 (mypy: not re-exported)


async def serve(
    runtime: Runtime,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    settings: HttpSettings | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 10.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    router: Router | None = None,
) -> None:
    """Serve the HTTP API until cancelled or ``shutdown_trigger`` returns. Reports the
    bound URLs (port 0 picks a free port).

    Serving tunes the process's garbage collector for latency (``gc.freeze()`` and a
    higher young-generation threshold): a program that embeds the server shares it.

    In a cluster (``settings.cluster_secret``), ``router`` says which node owns each
    space: requests for a space owned elsewhere are forwarded there."""
    # A server process: everything made so far lives as long as it does, so take it out of
    # the collector's sight, and collect the young generation less often. Full
    # collections stalled the event loop for 200+ ms under load (bench/realtime.py).
    tune_gc()
    decline_permessage_deflate()
    use_emit_connections()
    settings = settings or HttpSettings()
    config = EmitConfig()
    config.send_timeout = settings.send_timeout
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 75
    app = create_app(runtime, settings, router)
    forwarder: Forwarder | None = app.extensions.get(FORWARDER)
    if shutdown_trigger is not None and forwarder is not None:
        shutdown_trigger = _releasing(shutdown_trigger, forwarder)
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)


def _releasing(
    trigger: Callable[[], Awaitable[None]], forwarder: Forwarder
) -> Callable[[], Awaitable[None]]:
    """``trigger``, then the sockets relayed to other nodes closed (1001) as the shutdown
    begins, as this node's own streams are."""

    async def releasing() -> None:
        await trigger()
        forwarder.release()

    return releasing
