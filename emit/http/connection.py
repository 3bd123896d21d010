"""One client connection as Hypercorn's trio worker serves it, with its closing made
safe: every write bounded in time, and a close that neither races a write nor can be
cancelled halfway.

Hypercorn's `TCPServer` (0.18) has these faults on paths a real client walks:

- **A close that is cancelled halfway leaves the connection open for good.** Quart-Trio
  cancels a request's tasks once the app has answered and Hypercorn has reported the
  request over; when Hypercorn closes the connection from that same task (an answer
  sent before the request body was read: 401, 403, 429, 413), the cancellation lands in
  the close, the socket stays open, and the next request on it is parked forever.
- **A close races a write in flight.** The reader task closes the socket when the
  client's WebSocket close frame arrives, without waiting for the app's own close frame,
  already committed, to be written: the client sees 1006, and the app's write fails with
  `trio.BusyResourceError`.
- **A close with no status is answered with none.** A browser's ``ws.close()`` sends a
  close frame without a code; Hypercorn echoes it, and the page sees 1005 where the
  stream promised 1000. RFC 6455 lets the answer carry its own code (an echo is only
  "typical"): `Stream` answers such a close with 1000, normal closure.
- **A request Hypercorn refuses itself gets no error body.** Headers over 16 KiB (431),
  a malformed request (400) or an unsupported Transfer-Encoding (501) are answered
  with an empty body; `Http11` answers them in the spec's error shape, like every
  other error, and the last as 400 (the spec allows no 5xx but 503 for a bad request).
- **An idle connection is never closed.** Once a request is answered, Hypercorn starts
  the connection's idle timer (closed after ``keep_alive_timeout``, or at once on a
  shutdown) from the request's task, which Quart-Trio has already cancelled: the timer
  never starts, so a keep-alive connection lives until its client closes it, and a
  shutdown waits its whole grace period for every client holding one (a worker always
  does). `Connection` starts the timer shielded.
- **A write has no bound.** Writes are shielded from cancellation (a half-written frame
  would corrupt the stream), so a client that never reads holds the app's task, the
  socket and its file descriptor forever, whatever timeout the app sets.

`Connection` overrides the two TCP methods concerned: a write that does not finish within
``send_timeout`` seconds drops the connection (nothing else could be written on it
anyway), and a close waits for the write in flight (bounded by the same timeout) and
runs shielded. `serve()` installs both classes with `use_emit_connections()`;
tests/realtime/test_closing.py and tests/http/test_keepalive.py fail if Hypercorn
changes under them.
"""

from __future__ import annotations

from math import inf

import h11
import orjson
import trio
from hypercorn import protocol as hypercorn_protocol
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import h11 as hypercorn_h11
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio.tcp_server import TCPServer
from wsproto.events import CloseConnection
from wsproto.events import Event as WSProtoEvent
from wsproto.frame_protocol import CloseReason


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
        elif isinstance(event, Updated) and event.idle:
            # The request's task, which Quart-Trio has cancelled by now, reports the
            # connection idle: shielded, or the idle timer never starts.
            with trio.CancelScope(shield=True):
                await super().protocol_send(event)
        else:
            await super().protocol_send(event)

    async def _close(self) -> None:
        with trio.CancelScope(shield=True):
            if self.send_lock.statistics().owner is trio.lowlevel.current_task():
                await super()._close()  # closing from a failed write: nothing in flight
                return
            async with self.send_lock:  # let a frame already committed reach the client
                await super()._close()


class Stream(WSStream):
    async def _send_wsproto_event(self, event: WSProtoEvent) -> None:
        if isinstance(event, CloseConnection) and event.code == CloseReason.NO_STATUS_RCVD:
            event = CloseConnection(code=CloseReason.NORMAL_CLOSURE)  # not an empty echo
        await super()._send_wsproto_event(event)


class Http11(H11Protocol):
    async def _send_error_response(self, status_code: int) -> None:
        # h11 hints 501 for a Transfer-Encoding it does not support; the spec allows no
        # 5xx but 503 for a caller's fault, so every refusal but 431 is a 400.
        if status_code == 431:
            code, message = "header_too_large", "the request's headers are over 16 KiB"
        else:
            status_code, code = 400, "invalid_request"
            message = (
                "the request is not valid HTTP/1.1 (or uses a Transfer-Encoding other than chunked)"
            )
        body = orjson.dumps({"error": {"code": code, "message": message}})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


def use_emit_connections() -> None:
    """Make Hypercorn serve each connection with `Connection`, HTTP/1.1 with `Http11` and
    each WebSocket with `Stream` (process-wide: Hypercorn finds these classes by name,
    with no setting)."""
    setattr(hypercorn_run, "TCPServer", Connection)  # noqa: B010 (mypy: not re-exported)
    setattr(hypercorn_protocol, "H11Protocol", Http11)  # noqa: B010
    setattr(hypercorn_h11, "WSStream", Stream)  # noqa: B010
