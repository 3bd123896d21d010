"""Forwarding: any node takes any request, and one for a space another node owns goes to
that node, over node-to-node HTTP (and WebSocket), authenticated by the cluster secret.

Where a space lives is a `Router`'s answer: `Local` (this node serves it, or nobody
knows the space: the normal handler answers 404), `Remote` (that node's internal base
URL), or `Moving` (no live owner right now: 503 with ``Retry-After``). `Forwarder` is
ASGI middleware in front of the app. It finds the space a request names by the app's
own URL rules, never by a pattern of its own:

- a rule with ``<space_id>`` names that space (the API's space routes, a space's stream,
  the dashboard's space pages and their sockets);
- a rule with ``<job_id>`` and no ``<space_id>`` (the API's job routes, a job's stream)
  names the space of the caller's key, looked up as the app does (`Authenticator`, the
  store being shared by every node): an unknown key stays here, to be answered 401;
- any other (``GET|POST /api/v1/spaces``, health, metrics, the dashboard's home) is
  served here.

A forwarded request carries the secret in `HOP_HEADER`. A request that arrives with it
is a hop: it is served here, never forwarded again (no loops); if this node no longer
holds the space it is answered 503 ``Retry-After``, as `Moving`. A wrong secret is
refused (403, or 4403 on a socket); the header is taken out of the request before the
app sees it, so it reaches no handler and no log. A node without a secret forwards
nothing and refuses the header (`HopRefuser`).

The hop keeps the client's ``Host`` (and says ``X-Forwarded-For``, ``-Host`` and
``-Proto``, as a reverse proxy does): the owner's dashboard compares a socket's
``Origin`` with its ``Host``, and its session cookie, signed from the admin key every
node shares, works as it is.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson
import trio
import trio_websocket
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from ..errors import (
    MOVING_RETRY_AFTER,
    EmitError,
    Forbidden,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from ..http.access import seen
from ..http.auth import Authenticator, key_from_headers
from ..http.routes import retry_after

log = logging.getLogger("emit.cluster")

HOP_HEADER = "x-emit-cluster-secret"
"""The header a forwarded request carries the cluster secret in."""
_HOP = HOP_HEADER.encode()

UNREACHABLE_RETRY_AFTER = 1.0
"""Seconds a client is told to wait when the owner cannot be reached (it may be dying:
failover moves its spaces within the ownership lease)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to the owner (and, for a socket, its handshake)."""
READ_TIMEOUT = 90.0
"""Seconds the owner may be silent: the longest long poll (60 s) and a margin."""
CLOSE_TIMEOUT = 5.0
"""Seconds a socket's closing handshake with the owner may take."""
GOING = "this node is stopping; reconnect"
"""The reason a relayed socket is closed with as its node stops."""
MAX_MESSAGE = 16 * 1024 * 1024
"""The largest WebSocket message relayed (Hypercorn's own limit)."""

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers about one connection, never relayed (RFC 9110 §7.6.1)."""
_NOT_RELAYED = _HOP_BY_HOP | {b"host", b"content-length", b"expect", _HOP}
"""Of a request: what the hop sets itself (the body is relayed whole: its length is new)."""
_NOT_RELAYED_SOCKET = _NOT_RELAYED | {
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}
"""Of a socket's handshake: what the owner's handshake sets itself."""
_NOT_RETURNED = _HOP_BY_HOP | {b"date", b"server"}
"""Of an answer: what this node's server adds itself."""


@dataclass(frozen=True, slots=True)
class Local:
    """This node serves the space (or nobody knows it: the handler answers 404)."""


@dataclass(frozen=True, slots=True)
class Remote:
    """Another node serves the space: forward to its internal base URL."""

    url: str
    """``http://host:port`` (or ``https://``) of the owner, as nodes reach each other."""


@dataclass(frozen=True, slots=True)
class Moving:
    """No live owner right now (failover in progress): 503, retry after this long."""

    retry_after: float


LOCAL = Local()
Placement = Local | Remote | Moving


class Router(Protocol):
    """Where each space lives, as this node knows it now. Called on every request for a
    space: it answers from memory, without waiting."""

    def route(self, space_id: str) -> Placement: ...


TICK_PATH = "/internal/v1/cluster/tick"
"""``POST`` with the cluster secret: run the membership's tick now (a node that made a
space asks the others to, so its owner claims it at once). 204 once done."""


class Ticks(Protocol):
    """A router that can also tick its node's membership (`TICK_PATH`)."""

    async def tick(self) -> None: ...


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]


class HopRefuser:
    """ASGI middleware of a node without a cluster secret: it forwards nothing, and a
    request that says it was forwarded is refused (it cannot be told from a forged one).
    Costs a look through the request's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and _header(scope, _HOP) is not None:
            await _refuse(scope, receive, send, Forbidden("this node takes no forwarded requests"))
            return
        await self.app(scope, receive, send)


class Forwarder:
    """ASGI middleware of a node with a cluster secret: serves here what `router` says
    is here, forwards the rest to its owner, and serves each hop here (see the module's
    docstring). ``url_map`` is the app's (its rules say which space a request names),
    ``auth`` the app's `Authenticator` (the space of a job route is its key's)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret: str,
        router: Router | None,
        url_map: Map,
        auth: Authenticator,
        max_body: int,
    ) -> None:
        self.app = app
        self.secret = secret.encode()
        self.router = router
        self.rules = url_map.bind("localhost")
        self.auth = auth
        self.max_body = max_body
        self._relays: set[trio.CancelScope] = set()
        """The relayed sockets' pumps: cancelled as the node stops."""
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=CONNECT_TIMEOUT),
            # One connection to the owner per request in flight (long polls hold theirs
            # for up to a minute): no bound but the requests this node takes. Idle ones
            # are kept for the next request, but not as long as the owner keeps them
            # (75 s), so the owner never closes one as it is reused.
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=256, keepalive_expiry=5.0
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def release(self) -> None:
        """This node is stopping: close every relayed socket at once with 1001 (going
        away), as the node's own streams are, rather than hold the shutdown until they are
        cut. Forwarded requests are left to finish (a long poll within its wait, or the
        server's grace)."""
        for relay in list(self._relays):
            relay.cancel()

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        given = _header(scope, _HOP)
        if given is not None:
            if not hmac.compare_digest(given, self.secret):
                await _refuse(scope, receive, send, Forbidden("the cluster secret does not match"))
                return
            scope = {
                **scope,
                "headers": [(name, value) for name, value in scope["headers"] if name != _HOP],
            }
            tick = getattr(self.router, "tick", None)
            if scope["type"] == "http" and scope["path"] == TICK_PATH and tick is not None:
                await tick()
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        placement = LOCAL if self.router is None else await self._placement(scope)
        if type(placement) is Local:
            await self.app(scope, receive, send)
        elif given is not None or type(placement) is Moving:
            retry = placement.retry_after if type(placement) is Moving else MOVING_RETRY_AFTER
            await _refuse(
                scope,
                receive,
                send,
                Unavailable("the space is moving to another node; retry"),
                retry_after=retry,
            )
        elif isinstance(placement, Remote):
            if scope["type"] == "http":
                await self._forward(scope, receive, send, placement.url)
            else:
                await self._relay(scope, receive, send, placement.url)

    async def _placement(self, scope: Any) -> Placement:
        assert self.router is not None
        websocket = scope["type"] == "websocket"
        try:
            rule, args = self.rules.match(
                scope["path"], scope.get("method", "GET"), return_rule=True, websocket=websocket
            )
        except HTTPException:  # no such route (or a redirect): the app answers it
            return LOCAL
        space_id = args.get("space_id")
        if space_id is None and "job_id" in args:
            if websocket:
                query = parse_qsl(scope["query_string"].decode("latin-1"))
                key = next((value for name, value in query if name == "token"), None)
            else:
                key = key_from_headers(_text(scope, b"x-api-key"), _text(scope, b"authorization"))
            try:
                caller = await self.auth.caller(key or None)
            except Unauthorized:
                return LOCAL  # answered here: 401 (4401)
            space_id = caller.space_id
            seen(scope).key = caller.key_id
        if space_id is None:
            return LOCAL
        placement = self.router.route(space_id)
        if type(placement) is not Local:
            seen(scope).route = rule.rule
        return placement

    # ------------------------------------------------------------------------ HTTP

    async def _forward(self, scope: Any, receive: Receive, send: Send, owner: str) -> None:
        """The request to ``owner``, whole, and its answer back. A client that leaves
        first cancels the hop (the owner sees it leave, and gives back a long poll's
        jobs); an owner that cannot be reached is a 503."""
        body = await _body(receive, self.max_body)
        if body is None:
            return  # the client left
        if len(body) > self.max_body:
            error = PayloadTooLarge(f"the body is over the limit of {self.max_body} bytes")
            await _answer(send, error, [(b"connection", b"close")])
            return
        request = httpx.Request(
            scope["method"],
            owner.rstrip("/") + _resource(scope),
            headers=self._hop_headers(scope, _NOT_RELAYED),
            content=body,
        )
        answer: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_gone, receive, nursery.cancel_scope)
            try:
                response = await self.client.send(request, stream=True)
                try:
                    content = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    await response.aclose()
            except httpx.TransportError as error:
                log.warning("could not reach the owner %s: %r", owner, error)
                await _answer(
                    send,
                    Unavailable(_lost(error)),
                    [(b"retry-after", _seconds(UNREACHABLE_RETRY_AFTER))],
                )
            else:
                headers = [
                    (name, value)
                    for name, value in response.headers.raw
                    if name.lower() not in _NOT_RETURNED
                ]
                answer = (response.status_code, headers, content)
            nursery.cancel_scope.cancel()
        if answer is not None:
            status, headers, content = answer
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

    def _hop_headers(self, scope: Any, left_out: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
        """The client's headers less those about its connection, with the client's
        ``Host`` kept, the ``X-Forwarded-*`` of a reverse proxy, and the secret."""
        headers: list[tuple[bytes, bytes]] = []
        named = _connection_tokens(scope["headers"])
        host = b""
        forwarded_for = forwarded_host = forwarded_proto = b""
        for name, value in scope["headers"]:
            name = name.lower()
            if name == b"host":
                host = value
            elif name == b"x-forwarded-for":
                forwarded_for = value
            elif name == b"x-forwarded-host":
                forwarded_host = value
            elif name == b"x-forwarded-proto":
                forwarded_proto = value
            elif name not in left_out and name not in named:
                headers.append((name, value))
        client = scope.get("client")
        if client:
            address = client[0].encode()
            forwarded_for = forwarded_for + b", " + address if forwarded_for else address
        if forwarded_for:
            headers.append((b"x-forwarded-for", forwarded_for))
        if forwarded_host or host:
            headers.append((b"x-forwarded-host", forwarded_host or host))
        secure = scope.get("scheme") in ("https", "wss")
        headers.append((b"x-forwarded-proto", forwarded_proto or (b"https" if secure else b"http")))
        if host:
            headers.append((b"host", host))
        headers.append((_HOP, self.secret))
        return headers

    # -------------------------------------------------------------------- sockets

    async def _relay(self, scope: Any, receive: Receive, send: Send, owner: str) -> None:
        """The socket to ``owner``, message for message both ways, until either side
        closes; the owner's close code and reason reach the client as they are (an owner
        that vanishes is a 1013: reconnect), the client's close reaches the owner."""
        if (await receive())["type"] != "websocket.connect":
            return
        place = urlsplit(owner)
        secure = place.scheme == "https"
        port = place.port or (443 if secure else 80)
        host_header = _text(scope, b"host") or place.netloc
        resource = _resource(scope)
        headers = self._hop_headers(scope, _NOT_RELAYED_SOCKET)
        headers = [(name, value) for name, value in headers if name != b"host"]
        stream: trio.abc.Stream | None = None
        with trio.move_on_after(CONNECT_TIMEOUT):
            try:
                if secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        place.hostname or "", port, https_compatible=True
                    )
                else:
                    stream = await trio.open_tcp_stream(place.hostname or "", port)
            except OSError as error:
                log.warning("could not reach the owner %s: %r", owner, error)
        if stream is None:
            await _close(send, 1013, "the node that holds this space cannot be reached; retry")
            return
        try:
            await self._relay_on(stream, host_header, resource, headers, scope, receive, send)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _relay_on(
        self,
        stream: trio.abc.Stream,
        host: str,
        resource: str,
        headers: list[tuple[bytes, bytes]],
        scope: Any,
        receive: Receive,
        send: Send,
    ) -> None:
        refused: tuple[int, str] | None = None
        try:
            async with trio.open_nursery() as legs:
                owner = None
                with trio.move_on_after(CONNECT_TIMEOUT):
                    owner = await trio_websocket.wrap_client_stream(
                        legs,
                        stream,  # type: ignore[arg-type]  # any trio stream will do
                        host,
                        resource,
                        subprotocols=scope.get("subprotocols") or None,
                        extra_headers=headers,
                        max_message_size=MAX_MESSAGE,
                    )
                if owner is None:
                    refused = (1013, "the node that holds this space does not answer; retry")
                else:
                    await send({"type": "websocket.accept", "subprotocol": owner.subprotocol})
                    with trio.CancelScope() as relay:
                        self._relays.add(relay)
                        try:
                            await _pump(owner, receive, send)
                        finally:
                            self._relays.discard(relay)
                    if relay.cancelled_caught:  # this node is stopping
                        await send({"type": "websocket.close", "code": 1001, "reason": GOING})
                        with trio.move_on_after(CLOSE_TIMEOUT):
                            await owner.aclose(1001)
                legs.cancel_scope.cancel()
        except* trio_websocket.ConnectionRejected as group:
            # The owner's server refused the handshake itself: it never does for a route
            # of its own, so something is wrong there.
            log.warning("the owner refused a socket: %r", group.exceptions[0])
            refused = (1011, "the node that holds this space refused the socket")
        if refused is not None:
            await _close(send, *refused)


async def _pump(owner: trio_websocket.WebSocketConnection, receive: Receive, send: Send) -> None:
    async with trio.open_nursery() as pumps:

        async def down() -> None:
            while True:
                try:
                    message = await owner.get_message()
                except trio_websocket.ConnectionClosed as closed:
                    code, reason = _passed_on(closed.reason)
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    pumps.cancel_scope.cancel()
                    return
                if isinstance(message, str):
                    await send({"type": "websocket.send", "text": message})
                else:
                    await send({"type": "websocket.send", "bytes": message})

        async def up() -> None:
            while True:
                event = await receive()
                if event["type"] == "websocket.receive":
                    text = event.get("text")
                    # If the owner is closing, `down` passes its close on.
                    with contextlib.suppress(trio_websocket.ConnectionClosed):
                        await owner.send_message(text if text is not None else event["bytes"])
                elif event["type"] == "websocket.disconnect":
                    code = event.get("code", 1000)
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await owner.aclose(code if code not in _UNSENDABLE else 1000)
                    pumps.cancel_scope.cancel()
                    return

        pumps.start_soon(down)
        pumps.start_soon(up)


_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})
"""Close codes that say what a side saw, and may not be sent in a close frame."""


def _lost(error: httpx.TransportError) -> str:
    """The 503's message for a hop that failed: whether the owner may have the request."""
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return "the node that holds this space cannot be reached; nothing was sent: retry"
    # Sent, and then the connection failed: the owner may have made the change.
    return (
        "the node that holds this space went away while answering: the change may or may "
        "not have been made"
    )


def _passed_on(reason: trio_websocket.CloseReason | None) -> tuple[int, str | None]:
    """The close the client gets for the owner's."""
    if reason is None or reason.code == 1006 or reason.code == 1015:
        return 1013, "the node that holds this space went away; reconnect"
    if reason.code in _UNSENDABLE:
        return 1000, None
    return reason.code, reason.reason


# ----------------------------------------------------------------------- helpers


def _header(scope: Any, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers give names in lower case
            return bytes(value)
    return None


def _text(scope: Any, name: bytes) -> str | None:
    value = _header(scope, name)
    return None if value is None else value.decode("latin-1")


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The headers a ``Connection`` header names: about this connection only."""
    return frozenset(
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    )


def _resource(scope: Any) -> str:
    """The request's path and query, as the client sent them."""
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope["query_string"]
    return path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


def _seconds(seconds: float) -> bytes:
    return retry_after(seconds).encode()


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request's body, read to one byte past ``limit`` at most; None if the client
    left before it was all here."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit or not message.get("more_body"):
            return b"".join(chunks)


async def _cancel_when_gone(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _answer(
    send: Send, error: EmitError, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """The error in the spec's shape, as the app answers it."""
    body = orjson.dumps(error.to_wire())
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _close(send: Send, code: int, reason: str | None) -> None:
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})


async def _refuse(
    scope: Any,
    receive: Receive,
    send: Send,
    error: Forbidden | Unavailable,
    retry_after: float | None = None,
) -> None:
    """A request refused before the app sees it: its error (with ``Retry-After``), or
    a socket accepted and closed with 4403, or 1013 (retry)."""
    if scope["type"] == "websocket":
        if (await receive())["type"] == "websocket.connect":
            await _close(send, 4403 if isinstance(error, Forbidden) else 1013, error.message)
        return
    # Answered before the body was read: the connection cannot carry another request.
    headers = [(b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", _seconds(retry_after)))
    await _answer(send, error, headers)
