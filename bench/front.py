"""An experiment, not part of emit: the worker's hot routes served below Quart.

``python -m bench.front serve …`` is ``emit serve …`` with one change: in front of the
Quart-Trio app sits a plain ASGI function that answers the five routes of the worker
loop and the producer (create, poll, batch complete, ack, complete) itself and hands
everything else (every other route, WebSockets, lifespan) to the Quart app unchanged.
It calls the same route handlers, the same authenticator, rate limiter and access
check, with the same error shape; only the request and response plumbing is its own.
Hypercorn, its config and the runtime are the same.

It exists to put a number on the decision the developers' notes leave to the requester:
the design has Quart-Trio turn HTTP into messages, and bench/http.py's (a) and (b) show
the Quart stack costing more than half of the server's CPU. ``bench/http.py --front``
runs (a') and (b') against this server too. It does not watch for a client that hangs up
during a long poll (the Quart path does: tests/http/test_endpoints.py), so it is not fit
to serve anything.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import trio

from emit.errors import EmitError, PayloadTooLarge, RateLimited
from emit.http import server
from emit.http.app import _check_access, create_app
from emit.http.auth import Authenticator, key_from_headers
from emit.http.ratelimit import RateLimiter
from emit.http.routes import ROUTES, Call, Route, retry_after
from emit.http.settings import HttpSettings
from emit.runtime import Runtime

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HOT = {
    ("POST", "/api/v1/spaces/<space_id>/jobs"),
    ("POST", "/api/v1/spaces/<space_id>/jobs/poll"),
    ("POST", "/api/v1/spaces/<space_id>/jobs/complete"),
    ("POST", "/api/v1/jobs/<job_id>/ack"),
    ("POST", "/api/v1/jobs/<job_id>/complete"),
}
_NO_QUERY: dict[str, str] = {}
_JSON = [(b"content-type", b"application/json")]


class _Gone(Exception):
    """The client hung up."""


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", path) + "$")


_TABLE = [(_pattern(r.path), r) for r in ROUTES if (r.method, r.path) in _HOT]


def front(quart_app: Any, runtime: Runtime, settings: HttpSettings) -> ASGIApp:
    auth = Authenticator(runtime, settings.admin_key, settings.key_cache_seconds)
    limiter = RateLimiter(settings.rate, max(1.0, settings.rate))

    async def respond(send: Send, status: int, body: Any, headers: list[Any]) -> None:
        data = b"" if body is None else orjson.dumps(body)
        head = [*_JSON, (b"content-length", str(len(data)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": data})

    async def read_body(receive: Receive) -> bytes:
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > settings.max_body:
                raise PayloadTooLarge(f"the body is over the limit of {settings.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def hot(
        scope: Scope, receive: Receive, send: Send, route: Route, params: dict[str, str]
    ) -> None:
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            key = key_from_headers(headers.get("x-api-key"), headers.get("authorization"))
            caller = await auth.caller(key)
            wait = limiter.take(caller.key_id, trio.current_time(), caller.rate)
            if wait > 0:
                raise RateLimited(
                    f"over {settings.rate:g} requests/s for this key", retry_after=wait
                )
            _check_access(route, caller, params)
            call = Call(
                runtime=runtime,
                caller=caller,
                params=params,
                query=_NO_QUERY,
                headers=headers,
                body=await read_body(receive),
                max_body=settings.max_body,
                forget_token=auth.forget,
            )
            reply = await route.handler(call)
        except _Gone:
            return  # the client hung up before its body was read: nobody to answer
        except EmitError as error:
            extra = []
            if isinstance(error, RateLimited):
                extra = [(b"retry-after", retry_after(error.retry_after).encode())]
            await respond(send, error.status, error.to_wire(), extra)
            return
        extra = [(k.encode(), v.encode()) for k, v in reply.headers]
        await respond(send, reply.status, reply.body, extra)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for pattern, route in _TABLE:
                match = pattern.match(path)
                if match:
                    await hot(scope, receive, send, route, match.groupdict())
                    return
        await quart_app(scope, receive, send)

    return app


def main(argv: list[str]) -> None:
    from emit import cli

    def wrapped(runtime: Runtime, settings: HttpSettings) -> Any:
        return front(create_app(runtime, settings), runtime, settings)

    setattr(server, "create_app", wrapped)  # noqa: B010 (what serve() calls)
    sys.exit(cli.main(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
