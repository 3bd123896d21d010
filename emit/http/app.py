"""The Quart-Trio application: one generic dispatcher in front of the route table.

For every request: find the caller (401), check the route's access (403), take a rate
token (429), run the handler, render JSON. Every error leaves as the spec's error shape.
Every HTTP request is counted and timed under its route template (emit.metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson
import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ..cluster.forwarding import Forwarder, HopRefuser, Router
from ..errors import EmitError, Forbidden, NotFound, PayloadTooLarge, RateLimited, Unavailable
from ..metrics import UNMATCHED, HttpMeter
from ..runtime import Runtime
from .access import NO_ROUTE, SEEN, AccessLog, seen
from .auth import Authenticator, Caller, key_from_headers
from .openapi import openapi_document
from .ratelimit import RateLimiter
from .routes import ADMIN, METRICS, PUBLIC, ROUTES, Call, Reply, Route, retry_after
from .settings import HttpSettings

_NO_QUERY: dict[str, str] = {}

UNDELIVERED = "emit.undelivered"
"""The ASGI scope key of a request's `Call.undelivered` hooks."""
FORWARDER = "emit.forwarder"
"""The app's extension holding its `Forwarder`, when it has a cluster secret."""
GONE = 499
"""The status a request is counted under when its client left before the answer began
(nginx's "client closed request")."""


class HandOver:
    """ASGI middleware around every HTTP request: it counts and times the request under
    the route template it matched (``meter``), and runs its ``undelivered`` hooks when
    its answer was not sent in full. A client that hangs up makes Quart cancel the
    request, also after the handler returned while the answer goes out; a handler that
    took jobs for it leaves a hook that gives them back, so they do not wait out a lease
    nobody holds (which, with ``ack: true``, would spend an attempt). An answer handed
    whole to the socket counts as delivered: what becomes of it after that, only the
    worker knows."""

    def __init__(
        self,
        app: Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Any],
        meter: HttpMeter | None = None,
    ):
        self.app = app
        self.meter = meter

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = trio.current_time()
        hooks: list[Callable[[], None]] = []
        cast(dict[str, Any], scope)[UNDELIVERED] = hooks
        sent = False
        status = GONE

        async def tracking_send(message: ASGISendEvent) -> None:
            nonlocal sent, status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                if not message.get("body"):
                    # Every byte went out with the chunks before: the answer is
                    # delivered, even if this closing send is cut short (Hypercorn
                    # hands the request its disconnect while in it).
                    sent = True
                await send(message)
                sent = True
                return
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            if not sent:
                for hook in hooks:
                    hook()
            if self.meter is not None:
                note = cast(dict[str, Any], scope).get(SEEN)
                route = UNMATCHED if note is None or note.route == NO_ROUTE else note.route
                self.meter.observe(route, scope["method"], status, trio.current_time() - began)


def _response(status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    if body is None:
        response = Response(b"", status=status)
    elif type(body) is bytes:
        response = Response(body, status=status)  # its Content-Type is in ``headers``
    else:
        response = Response(orjson.dumps(body), status=status, content_type="application/json")
    for name, value in headers:
        response.headers[name] = value
    return response


def error_response(error: EmitError) -> Response:
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(error, RateLimited | Unavailable) and error.retry_after is not None:
        headers = (("Retry-After", retry_after(error.retry_after)),)
    elif isinstance(error, PayloadTooLarge):
        # The rest of the body was never read: the connection cannot carry another request.
        headers = (("Connection", "close"),)
    return _response(error.status, error.to_wire(), headers)


def _closing_if_body_unread(response: Response) -> Response:
    """An answer given before the request's body was read: the rest of the body may
    still be on its way, so the connection cannot carry another request. Say so, and
    Hypercorn closes it once the answer is out (a keep-alive client then reconnects
    instead of sending its next request into the leftovers)."""
    if request.content_length or "chunked" in request.headers.get("transfer-encoding", ""):
        response.headers["Connection"] = "close"
    return response


def _check_access(route: Route, caller: Caller, params: dict[str, str]) -> None:
    if route.access == ADMIN:
        if not caller.admin:
            raise Forbidden("this endpoint needs the admin key")
        return
    if caller.admin:
        raise Forbidden("the admin key manages spaces and tokens only; use a space's key")
    if route.access not in caller.scopes:
        raise Forbidden(f"Missing required scope: {route.access}")
    space_id = params.get("space_id")
    if space_id is not None and space_id != caller.space_id:
        raise Forbidden("this key belongs to another space")


def create_app(runtime: Runtime, settings: HttpSettings, router: Router | None = None) -> QuartTrio:
    """The app. With ``settings.cluster_secret``, a request for a space ``router`` says
    another node owns is forwarded to it (emit.cluster.forwarding)."""
    app = QuartTrio("emit")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body
    app.config["JSON_SORT_KEYS"] = False
    auth = Authenticator(
        runtime, settings.admin_key, settings.key_cache_seconds, settings.metrics_token
    )
    limiter = RateLimiter(settings.rate, max(1.0, settings.rate))
    document = orjson.dumps(openapi_document())

    async def dispatch(route: Route, params: dict[str, str]) -> Response:
        body_read = False
        note = seen(request.scope)
        note.route = route.path
        try:
            caller = Caller("public", None, frozenset())
            if route.access == METRICS:
                caller = auth.scraper(
                    key_from_headers(
                        request.headers.get("x-api-key"), request.headers.get("authorization")
                    )
                )
            elif route.access != PUBLIC:
                key = key_from_headers(
                    request.headers.get("x-api-key"), request.headers.get("authorization")
                )
                caller = await auth.caller(key)
                note.key = caller.key_id
                wait = limiter.take(caller.key_id, trio.current_time(), caller.rate)
                if wait > 0:
                    rate = settings.rate if caller.rate is None else caller.rate
                    raise RateLimited(f"over {rate:g} requests/s for this key", retry_after=wait)
                _check_access(route, caller, params)
            try:
                body = (
                    await request.get_data(cache=False, as_text=False)
                    if route.method != "GET"
                    else b""
                )
                body_read = True
            except HTTPException as exc:
                if exc.code == 413:
                    raise PayloadTooLarge(
                        f"the body is over the limit of {settings.max_body} bytes"
                    ) from None
                raise
            call = Call(
                runtime=runtime,
                caller=caller,
                params=params,
                # Only the GET routes read the query: parse it for them alone.
                query=request.args if route.method == "GET" else _NO_QUERY,
                headers=request.headers,  # type: ignore[arg-type]  # a str→str multidict
                body=body if isinstance(body, bytes) else body.encode(),
                max_body=settings.max_body,
                forget_token=auth.forget,
                forget_space=auth.forget_space,
                undelivered=request.scope.get(UNDELIVERED, []),  # type: ignore[arg-type]
            )
            reply: Reply = await route.handler(call)
            response = _response(reply.status, reply.body, reply.headers)
        except EmitError as error:
            response = error_response(error)
        return response if body_read else _closing_if_body_unread(response)

    for index, route in enumerate(ROUTES):

        async def view(route: Route = route, **params: str) -> Response:
            return await dispatch(route, params)

        app.add_url_rule(route.path, f"r{index}", view, methods=[route.method])

    from ..realtime.streams import add_stream_routes

    add_stream_routes(app, runtime, auth)

    async def openapi() -> Response:
        seen(request.scope).route = "/api/v1/openapi.json"
        return Response(document, content_type="application/json")

    app.add_url_rule("/api/v1/openapi.json", "openapi", openapi, methods=["GET"])

    from ..dashboard import add_dashboard

    add_dashboard(app, runtime, settings.admin_key, auth.forget, auth.forget_space)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            return _closing_if_body_unread(error_response(NotFound("no such endpoint")))
        if status == 413:
            return error_response(PayloadTooLarge("the body is over the limit"))
        if status == 405:
            code = "method_not_allowed"
        elif status >= 500:
            code = "internal_error"  # a bug (spec §2): not the caller's request
        else:
            code = "invalid_request"
        response = _response(status, {"error": {"code": code, "message": error.description}})
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return _closing_if_body_unread(response)

    app.asgi_app = AccessLog(  # type: ignore[method-assign]
        HandOver(_forwarding(app, auth, settings, router), runtime.metrics.http)
    )
    return app


def _forwarding(
    app: QuartTrio, auth: Authenticator, settings: HttpSettings, router: Router | None
) -> Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Any]:
    """The app behind the cluster's hop: forwarding with a cluster secret, else only the
    refusal of a forwarded request (then a look through the headers is all it costs)."""
    if settings.cluster_secret is None:
        return HopRefuser(app.asgi_app)
    forwarder = Forwarder(
        app.asgi_app,
        secret=settings.cluster_secret,
        router=router,
        url_map=app.url_map,
        auth=auth,
        max_body=settings.max_body,
    )

    @app.after_serving
    async def close_forwarding() -> None:
        await forwarder.aclose()

    app.extensions[FORWARDER] = forwarder
    return forwarder
