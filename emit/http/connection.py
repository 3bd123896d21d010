"""One client connection as Hypercorn's trio worker serves it, with its closing made
safe: every write bounded in time, and a close that neither races a write nor can be
cancelled halfway.

Hypercorn's `TCPServer` (0.18) has three faults on paths a real client walks:

- **A close that is cancelled halfway leaves the connection open for good.** Quart-Trio
  cancels a request's tasks once the app has answered and Hypercorn has reported the
  request over; when Hypercorn closes the connection from that same task (an answer
  sent before the request body was read: 401, 403, 429, 413), the cancellation lands in
  the close, the socket stays open, and the next request on it is parked forever.
- **A close races a write in flight.** The reader task closes the socket when the
  client's WebSocket close frame arrives, without waiting for the app's own close frame,
  already committed, to be written: the client sees 1006, and the app's write fails with
  `trio.BusyResourceError`.
- **A write has no bound.** Writes are shielded from cancellation (a half-written frame
  would corrupt the stream), so a client that never reads holds the app's task, the
  socket and its file descriptor forever, whatever timeout the app sets.

`Connection` overrides the two methods concerned: a write that does not finish within
``send_timeout`` seconds drops the connection (nothing else could be written on it
anyway), and a close waits for the write in flight (bounded by the same timeout) and
runs shielded. `serve()` installs it with `use_emit_connections()`.
"""

from __future__ import annotations

from math import inf

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.tcp_server import TCPServer


class EmitConfig(Config):
    """Hypercorn's settings plus the one `Connection` reads."""

    send_timeout: float = inf
    """Seconds one write may take before the connection is dropped."""


class Connection(TCPServer):
    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            async with self.send_lock:
                sent = False
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(getattr(self.config, "send_timeout", inf)):
                        try:
                            await self.stream.send_all(event.data)
                            sent = True
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    if not sent:
                        await self.stream.aclose()  # a stalled client: drop it
                if not sent:
                    await self.protocol.handle(Closed())
        elif isinstance(event, Closed):
            await self._close()
            await self.protocol.handle(Closed())
        else:
            await super().protocol_send(event)

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            if self.send_lock.statistics().owner is trio.lowlevel.current_task():
                await super()._close()  # closing from a failed write: nothing in flight
                return
            async with self.send_lock:  # let a frame already committed reach the client
                await super()._close()


def use_emit_connections() -> None:
    """Make Hypercorn's trio worker serve each connection with `Connection`
    (process-wide: Hypercorn builds its connection class by name, with no setting)."""
    setattr(hypercorn_run, "TCPServer", Connection)  # noqa: B010 (mypy: not re-exported)
