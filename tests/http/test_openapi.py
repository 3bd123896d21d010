"""The OpenAPI document is true: every route is in it, and every documented operation
answers (with something other than "no such endpoint")."""

import re

from emit.http.openapi import openapi_path
from emit.http.routes import ROUTES

from .conftest import Server


async def test_every_route_is_documented_and_every_documented_route_exists(
    server: Server,
) -> None:
    document = (await server.client.get("/api/v1/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    routed = {(route.method, openapi_path(route.path)) for route in ROUTES}
    routed.add(("GET", "/api/v1/openapi.json"))
    assert routed == documented
    for method, path in sorted(documented):
        concrete = re.sub(r"\{\w+\}", "01AAAAAAAAAAAAAAAAAAAAAAAA", path)
        response = await server.client.request(method, concrete, headers=server.headers("admin"))
        body = response.json() if response.content else {}
        error = body.get("error", {}) if isinstance(body, dict) else {}
        # It may refuse (401/403/404 for the made-up id) but never as an unknown route.
        assert error.get("message") != "no such endpoint", (method, path)
        assert response.status_code != 405, (method, path)
