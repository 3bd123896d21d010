"""The OpenAPI 3.1 document of the whole API, built from the route table so that it
cannot drift from the routes: every route's operation is looked up by its handler in
`OPERATIONS` (a route without one fails at import), and a test checks that every rule
the app serves is documented and every documented operation is served.

Each operation has its query parameters, its request body's schema and the schema of
each answer, so the document can validate real traffic and drive a fuzzer
(tests/http/test_fuzzing.py). Every error answer is the spec's error shape (``default``).
The two WebSocket streams are documented as the GET requests that open them
(``x-websocket: true``); their messages and close codes are in docs/realtime.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..domain.model import JobStatus
from ..domain.settings import MAX_RETENTION
from ..domain.slack import SLACK_EVENTS
from ..version import __version__
from . import routes
from .routes import ADMIN, METRICS, PUBLIC, ROUTES

Schema = dict[str, Any]

ANY: Schema = {}
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
TIME: Schema = {"type": "string", "format": "date-time"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    properties: dict[str, Schema], required: tuple[str, ...] = (), *, closed: bool = False
) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def array(items: Schema, low: int = 0, high: int | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if low:
        schema["minItems"] = low
    if high is not None:
        schema["maxItems"] = high
    return schema


LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"]
STATUSES = [status.value for status in JobStatus]
HEADERS: Schema = {"type": "object", "additionalProperties": STRING}
BACKOFF = obj(
    {
        "initialSeconds": {"type": "number", "minimum": 0},
        "factor": {"type": "number", "minimum": 1},
        "maxSeconds": {"type": "number", "minimum": 0},
    }
)
NAMES: Schema = {"anyOf": [STRING, array(STRING)]}

JOB_FIELDS: dict[str, Schema] = {
    "id": STRING,
    "spaceId": STRING,
    "name": STRING,
    "payload": ANY,
    "status": {"type": "string", "enum": STATUSES},
    "priority": INTEGER,
    "maxRetries": INTEGER,
    "attemptNumber": INTEGER,
    "timeoutSeconds": INTEGER,
    "scheduledFor": nullable(TIME),
    "callbackUrl": nullable(STRING),
    "callbackHeaders": nullable(HEADERS),
    "idempotencyKey": nullable(STRING),
    "progress": nullable({"type": "object"}),
    "result": ANY,
    "createdAt": TIME,
    "updatedAt": TIME,
    "deliveredAt": nullable(TIME),
    "startedAt": nullable(TIME),
    "completedAt": nullable(TIME),
}
EVENT = obj(
    {"seq": INTEGER, "type": STRING, "attemptNumber": INTEGER, "data": ANY, "createdAt": TIME},
    ("seq", "type", "attemptNumber", "data", "createdAt"),
)
SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {"error": obj({"code": STRING, "message": STRING}, ("code", "message"))}, ("error",)
    ),
    "Job": obj(JOB_FIELDS, tuple(JOB_FIELDS)),
    "JobWithEvents": obj({**JOB_FIELDS, "events": array(EVENT)}, (*JOB_FIELDS, "events")),
    "Descriptor": obj(
        {
            "id": STRING,
            "name": STRING,
            "payload": ANY,
            "priority": INTEGER,
            "timeoutSeconds": INTEGER,
            "maxRetries": INTEGER,
            "attemptNumber": INTEGER,
            "createdAt": TIME,
            "leaseId": STRING,
            "checkpoint": ANY,
        },
        (
            "id",
            "name",
            "payload",
            "priority",
            "timeoutSeconds",
            "maxRetries",
            "attemptNumber",
            "createdAt",
            "leaseId",
            "checkpoint",
        ),
    ),
    "NewJob": obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "payload": ANY,
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "maxRetries": {"type": "integer", "minimum": 0, "maximum": 25},
            "timeoutSeconds": {"type": "integer", "minimum": 1, "maximum": 86400},
            "scheduledFor": nullable(TIME),
            "callbackUrl": nullable({"type": "string", "format": "uri"}),
            "callbackHeaders": nullable(HEADERS),
            "idempotencyKey": nullable(STRING),
            "retryBackoff": nullable(BACKOFF),
        },
        ("name",),
        closed=True,
    ),
    "Results": obj(
        {"results": array(obj({"id": ANY, "status": INTEGER, "error": STRING}, ("id", "status")))},
        ("results",),
    ),
    "Space": obj(
        {"id": STRING, "name": STRING, "publicToken": STRING, "createdAt": TIME},
        ("id", "name", "publicToken", "createdAt"),
    ),
    "SpaceWithSettings": obj(
        {
            "id": STRING,
            "name": STRING,
            "publicToken": STRING,
            "createdAt": TIME,
            "settings": {"type": "object"},
        },
        ("id", "name", "publicToken", "createdAt", "settings"),
    ),
    "Token": obj(
        {
            "id": STRING,
            "name": STRING,
            "scopes": array(STRING),
            "prefix": STRING,
            "public": {"type": "boolean"},
            "createdAt": TIME,
            "revokedAt": nullable(TIME),
            "lastUsedAt": nullable(TIME),
        },
        ("id", "name", "scopes", "prefix", "public", "createdAt", "revokedAt", "lastUsedAt"),
    ),
}

LEASE: dict[str, Schema] = {"leaseId": STRING}
"""A body's optional lease (the ``x-emit-lease`` header says the same)."""


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    schema: Schema
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Operation:
    """What the route table does not say about an endpoint: its inputs and answer."""

    reply: Schema | None
    """The success answer's body (None: no body, as for 204)."""
    body: Schema | None = None
    """The JSON request body's schema (None: the endpoint reads no body)."""
    query: tuple[Query, ...] = ()
    also: tuple[int, ...] = ()
    """Other success statuses with the same body (a create that found its idempotency
    key answers 200, not 201)."""
    reply_headers: dict[str, Schema] = field(default_factory=dict)
    ndjson: bool = False
    """The body may also be NDJSON (``application/x-ndjson``)."""
    media: str = "application/json"
    """The success answer's media type."""


LOG_LINE = obj(
    {"level": {"type": "string", "enum": LEVELS}, "message": STRING, "ts": TIME,
     "fields": {"type": "object"}},
    ("level", "message"),
)  # fmt: skip

OPERATIONS: dict[Callable[..., Any], Operation] = {
    routes.create_jobs: Operation(
        {"anyOf": [ref("Job"), array(ref("Job"))]},
        {"anyOf": [ref("NewJob"), array(ref("NewJob"), 1, 1000)]},
        also=(200,),
    ),
    routes.poll: Operation(
        obj({"jobs": array(ref("Descriptor"))}, ("jobs",)),
        obj(
            {
                "count": {"type": "integer", "minimum": 1, "maximum": 50},
                "types": NAMES,
                "type": NAMES,
                "names": NAMES,
                "name": NAMES,
                "wait": {"type": "number", "minimum": 0, "maximum": 60},
                "ack": {"type": "boolean"},
            },
            closed=True,
        ),
    ),
    routes.complete_many: Operation(
        ref("Results"),
        obj(
            {"jobs": array(obj({"id": STRING, "result": ANY, **LEASE}, ("id",)), 1, 500)},
            ("jobs",),
        ),
    ),
    routes.fail_many: Operation(
        ref("Results"),
        obj(
            {"jobs": array(obj({"id": STRING, "error": STRING, **LEASE}, ("id", "error")), 1, 500)},
            ("jobs",),
        ),
    ),
    routes.claim: Operation(ref("Descriptor")),
    routes.ack: Operation(ref("Job"), obj(LEASE)),
    routes.progress: Operation(
        ref("Job"),
        obj(
            {
                "percent": {"type": "number", "minimum": 0, "maximum": 100},
                "message": STRING,
                "subProgress": nullable(
                    {
                        "type": "object",
                        "additionalProperties": obj(
                            {
                                "percent": {"type": "number", "minimum": 0, "maximum": 100},
                                "message": STRING,
                            },
                            ("percent",),
                        ),
                    }
                ),
                **LEASE,
            },
            ("percent", "message"),
        ),
    ),
    routes.checkpoint: Operation(ref("Job"), {"type": "object"}),
    routes.record_event: Operation(
        ref("Job"), obj({"type": STRING, "data": ANY, **LEASE}, ("type",))
    ),
    routes.post_logs: Operation(
        obj({"accepted": INTEGER}, ("accepted",)), array(LOG_LINE), ndjson=True
    ),
    routes.keepalive: Operation(
        ref("Job"), obj({"seconds": {"type": "integer", "minimum": 1, "maximum": 86400}, **LEASE})
    ),
    routes.complete: Operation(ref("Job"), obj({"result": ANY, **LEASE})),
    routes.fail: Operation(ref("Job"), obj({"error": STRING, **LEASE}, ("error",))),
    routes.kill: Operation(ref("Job"), obj({"reason": ANY})),
    routes.retry: Operation(ref("Job")),
    routes.list_jobs: Operation(
        array(ref("Job")),
        query=(
            Query("status", {"type": "string", "enum": STATUSES}),
            Query("name", STRING),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
            Query("offset", {"type": "integer", "minimum": 0}),
        ),
        reply_headers={"X-Total-Count": INTEGER},
    ),
    routes.stats: Operation(
        obj(
            {
                "counts": obj({s: INTEGER for s in STATUSES}, tuple(STATUSES)),
                "pollers": INTEGER,
            },
            ("counts", "pollers"),
        )
    ),
    routes.get_job: Operation(ref("JobWithEvents")),
    routes.get_progress: Operation(
        obj(
            {
                "jobId": STRING,
                "status": {"type": "string", "enum": STATUSES},
                "percent": nullable({"type": "number"}),
                "message": nullable(STRING),
                "subProgress": nullable({"type": "object"}),
                "updatedAt": TIME,
            },
            ("jobId", "status", "percent", "message", "subProgress", "updatedAt"),
        )
    ),
    routes.get_logs: Operation(
        obj(
            {
                "logs": array(
                    obj(
                        {
                            "seq": INTEGER,
                            "level": {"type": "string", "enum": LEVELS},
                            "message": STRING,
                            "ts": TIME,
                            "fields": ANY,
                        },
                        ("seq", "level", "message", "ts", "fields"),
                    )
                ),
                "next": nullable(INTEGER),
            },
            ("logs", "next"),
        ),
        query=(
            Query("after", {"type": "integer", "minimum": 0}, description="a log seq"),
            Query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
            Query("level", {"type": "string", "enum": LEVELS}, description="the minimum"),
            Query("q", STRING, description="a substring of the message"),
        ),
    ),
    routes.create_space: Operation(
        ref("Space"), obj({"name": {"type": "string", "minLength": 1}}, ("name",))
    ),
    routes.list_spaces: Operation(array(ref("Space"))),
    routes.get_space: Operation(ref("SpaceWithSettings")),
    routes.update_space: Operation(
        ref("SpaceWithSettings"),
        obj(
            {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "retryBackoff": nullable(BACKOFF),
                "signingSecret": nullable({"type": "string", "minLength": 16, "maxLength": 256}),
                "pushUrl": nullable({"type": "string", "format": "uri"}),
                "pushHeaders": nullable(HEADERS),
                "pushNames": nullable(array({"type": "string", "minLength": 1})),
                "rateLimit": nullable({"type": "number", "exclusiveMinimum": 0}),
                "slackUrl": nullable({"type": "string", "format": "uri"}),
                "slackEvents": nullable(array({"type": "string", "enum": list(SLACK_EVENTS)}, 1)),
                "retention": nullable(
                    obj(
                        {
                            status: nullable(
                                {"type": "integer", "minimum": 0, "maximum": MAX_RETENTION}
                            )
                            for status in ("completed", "dead", "killed")
                        },
                        closed=True,
                    )
                ),
            },
            closed=True,
        ),
    ),
    routes.delete_space: Operation(None),
    routes.create_token: Operation(
        obj(
            {
                "id": STRING,
                "name": STRING,
                "scopes": array(STRING),
                "key": STRING,
                "createdAt": TIME,
            },
            ("id", "name", "scopes", "key", "createdAt"),
        ),
        obj({"name": STRING, "scopes": array(STRING), "preset": STRING}),
    ),
    routes.list_tokens: Operation(array(ref("Token"))),
    routes.revoke_token: Operation(None),
    routes.healthz: Operation(obj({"status": {"const": "ok"}}, ("status",))),
    routes.readyz: Operation(obj({"status": {"const": "ready"}, "spaces": INTEGER}, ("status",))),
    routes.metrics: Operation(STRING, media="text/plain"),
}

STREAMS: tuple[tuple[str, str, str, tuple[Query, ...]], ...] = (
    (
        "/api/v1/realtime/spaces/<space_id>",
        "space_stream",
        "The space stream (WebSocket; key with `jobs:read`)",
        (
            Query("since", STRING, description="the last seq handled, to replay from"),
            Query("streamInstanceId", STRING, description="of the `connected` that seq came in"),
        ),
    ),
    (
        "/api/v1/realtime/<job_id>",
        "job_stream",
        "The job stream (WebSocket; key with `jobs:read:progress`)",
        (),
    ),
)
"""The WebSocket routes (emit/realtime/streams.py): path, operation id, summary, query."""


def openapi_path(path: str) -> str:
    """``/jobs/<job_id>`` → ``/jobs/{jobId}``."""
    return re.sub(
        r"<(\w+)>",
        lambda m: "{" + re.sub(r"_(\w)", lambda n: n.group(1).upper(), m.group(1)) + "}",
        path,
    )


def _parameters(path: str, query: tuple[Query, ...]) -> list[Schema]:
    parameters: list[Schema] = [
        {"name": name, "in": "path", "required": True, "schema": STRING}
        for name in re.findall(r"\{(\w+)\}", path)
    ]
    for item in query:
        parameter: Schema = {
            "name": item.name,
            "in": "query",
            "required": item.required,
            "schema": item.schema,
        }
        if item.description:
            parameter["description"] = item.description
        parameters.append(parameter)
    return parameters


ERRORS: Schema = {
    "description": "an error, in the spec's shape",
    "content": {"application/json": {"schema": ref("Error")}},
}
KEY_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]


def _operation(route: routes.Route) -> Schema:
    spec = OPERATIONS[route.handler]
    path = openapi_path(route.path)
    success: Schema = {"description": route.summary}
    if spec.reply is not None:
        success["content"] = {spec.media: {"schema": spec.reply}}
    if spec.reply_headers:
        success["headers"] = {
            name: {"schema": schema, "required": True}
            for name, schema in spec.reply_headers.items()
        }
    responses: Schema = {str(status): success for status in (route.success, *spec.also)}
    responses["default"] = ERRORS
    operation: Schema = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "parameters": _parameters(path, spec.query),
        "responses": responses,
    }
    if route.access == ADMIN:
        operation["security"] = KEY_SECURITY
        operation["description"] = "Admin key only."
    elif route.access == METRICS:
        operation["security"] = KEY_SECURITY
        operation["description"] = (
            "The metrics token (`emit serve --metrics-token`) or the admin key, as "
            "`Authorization: Bearer`. The Prometheus text format (docs/operations.md)."
        )
    elif route.access == PUBLIC:
        operation["security"] = []
    else:
        operation["security"] = KEY_SECURITY
        operation["description"] = f"Scope: `{route.access}`."
    if spec.body is not None:
        content: Schema = {"application/json": {"schema": spec.body}}
        if spec.ndjson:
            content["application/x-ndjson"] = {"schema": STRING}
        # An empty body counts as {} where every field is optional; elsewhere it is a 400.
        optional = spec.body.get("type") == "object" and "properties" in spec.body
        optional = optional and "required" not in spec.body
        operation["requestBody"] = {"required": not optional, "content": content}
    return operation


def _stream(path: str, operation_id: str, summary: str, query: tuple[Query, ...]) -> Schema:
    path = openapi_path(path)
    token = Query("token", STRING, required=True, description="the key (only here on a socket)")
    return {
        "summary": summary,
        "operationId": operation_id,
        "description": "Opens a WebSocket (GET with `Upgrade: websocket`); the messages "
        "and close codes are in docs/realtime.md. A plain GET is refused with 400.",
        "x-websocket": True,
        "security": [],
        "parameters": _parameters(path, (token, *query)),
        "responses": {"101": {"description": "switching to the WebSocket"}, "default": ERRORS},
    }


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(openapi_path(route.path), {})[route.method.lower()] = _operation(route)
    for path, operation_id, summary, query in STREAMS:
        paths.setdefault(openapi_path(path), {})["get"] = _stream(
            path, operation_id, summary, query
        )
    paths["/api/v1/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "default": ERRORS,
            },
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
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


_missing = [route.path for route in ROUTES if route.handler not in OPERATIONS]
if _missing:  # pragma: no cover - a route added without its operation
    raise RuntimeError(f"routes without an OpenAPI operation: {_missing}")
