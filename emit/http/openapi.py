"""The OpenAPI 3.1 document of the whole API, built from the route table so that it
cannot drift from the routes (a test checks both ways)."""

from __future__ import annotations

import re
from typing import Any

from ..version import __version__
from .routes import ADMIN, PUBLIC, ROUTES

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def openapi_path(path: str) -> str:
    """``/jobs/<job_id>`` → ``/jobs/{jobId}``."""
    return re.sub(
        r"<(\w+)>",
        lambda m: "{" + re.sub(r"_(\w)", lambda n: n.group(1).upper(), m.group(1)) + "}",
        path,
    )


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in (*ROUTES,):
        path = openapi_path(route.path)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"\{(\w+)\}", path)
        ]
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "parameters": parameters,
            "responses": {
                str(route.success): {"description": "success"},
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
        if route.access == ADMIN:
            operation["security"] = [{"apiKey": []}, {"bearer": []}]
            operation["description"] = "Admin key only."
        elif route.access == PUBLIC:
            operation["security"] = []
        else:
            operation["security"] = [{"apiKey": []}, {"bearer": []}]
            operation["description"] = f"Scope: `{route.access}`."
        if route.method in ("POST", "PATCH"):
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": {}}},
            }
        paths.setdefault(path, {})[route.method.lower()] = operation
    paths["/api/v1/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "emit",
            "version": __version__,
            "description": "The emit.run job queue API, self-hosted.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
