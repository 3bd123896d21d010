"""The OpenAPI document is true and complete: every rule the app serves (HTTP and
WebSocket) is documented and every documented operation is served; each operation has
its parameters and its request and answer schemas; the errors Quart and Hypercorn give
themselves (405, 431) come in the spec's error shape too."""

import re

import orjson
import trio

from emit.http.app import create_app
from emit.http.openapi import OPERATIONS, openapi_document, openapi_path
from emit.http.routes import ROUTES
from emit.http.settings import HttpSettings

from .conftest import Server


def served_rules(server: Server) -> set[tuple[str, str]]:
    app = create_app(server.rt, HttpSettings())
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard's pages are HTML for a browser, not the API
        methods = {"GET"} if rule.websocket else set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        served |= {(method, openapi_path(rule.rule)) for method in methods}
    return served


async def test_every_served_rule_is_documented_and_every_documented_one_is_served(
    server: Server,
) -> None:
    document = (await server.client.get("/api/v1/openapi.json")).json()
    assert document == orjson.loads(orjson.dumps(openapi_document()))
    assert document["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert served_rules(server) == documented
    for method, path in sorted(documented):
        concrete = re.sub(r"\{\w+\}", "01AAAAAAAAAAAAAAAAAAAAAAAA", path)
        response = await server.client.request(method, concrete, headers=server.headers("admin"))
        json = response.headers.get("content-type", "").startswith("application/json")
        body = response.json() if json else {}  # /metrics answers text
        error = body.get("error", {}) if isinstance(body, dict) else {}
        # It may refuse (401/403/404 for the made-up id) but never as an unknown route.
        assert error.get("message") != "no such endpoint", (method, path)
        assert response.status_code != 405, (method, path)


def test_every_operation_says_what_it_takes_and_answers() -> None:
    document = openapi_document()
    assert {route.handler for route in ROUTES} == set(OPERATIONS)
    for route in ROUTES:
        operation = document["paths"][openapi_path(route.path)][route.method.lower()]
        responses = operation["responses"]
        assert responses["default"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
        success = responses[str(route.success)]
        assert ("content" in success) == (route.success != 204), route.path
        if route.method in ("POST", "PATCH") and route.handler.__name__ not in ("claim", "retry"):
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema, route.path  # never the empty schema
    list_jobs = document["paths"]["/api/v1/spaces/{spaceId}/jobs"]["get"]
    assert [p["name"] for p in list_jobs["parameters"]] == [
        "spaceId", "status", "name", "limit", "offset",
    ]  # fmt: skip
    logs = document["paths"]["/api/v1/jobs/{jobId}/logs"]["get"]
    assert [p["name"] for p in logs["parameters"]] == ["jobId", "after", "limit", "level", "q"]
    stream = document["paths"]["/api/v1/realtime/spaces/{spaceId}"]["get"]
    assert stream["x-websocket"] is True
    assert [p["name"] for p in stream["parameters"]] == [
        "spaceId", "token", "since", "streamInstanceId",
    ]  # fmt: skip


async def test_a_wrong_method_is_405_with_allow_in_the_error_shape(server: Server) -> None:
    response = await server.client.put("/api/v1/spaces", headers=server.headers("admin"))
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def raw_answer(server: Server, request: bytes) -> tuple[bytes, bytes]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.fail_after(10):
            while data := await stream.receive_some(65536):
                received += data  # the server closes once it has answered
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower()
    return head, body


async def test_headers_over_the_limit_are_431_in_the_error_shape(server: Server) -> None:
    head, body = await raw_answer(
        server, f"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {'a' * 100_000}\r\n\r\n".encode()
    )
    assert head.startswith(b"HTTP/1.1 431")
    assert orjson.loads(body)["error"]["code"] == "header_too_large"


async def test_an_unsupported_transfer_encoding_is_400_not_501(server: Server) -> None:
    """The fuzzer found it: h11 refuses ``Transfer-Encoding: gzip`` with 501, and the spec
    allows no 5xx but 503 for a bad request."""
    head, body = await raw_answer(
        server,
        b"POST /healthz HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 400")
    assert orjson.loads(body)["error"]["code"] == "invalid_request"
