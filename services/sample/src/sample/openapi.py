"""The OpenAPI 3.1 document served at /openapi.json: every route, its parameters, bodies and errors."""

from __future__ import annotations

from typing import Any

import msgspec

from sample.api.jobs import JOB_ID, MAX_PAYLOAD_BYTES
from sample.cursor import MAX_ID
from sample.jobkinds import KINDS
from sample.models import MAX_BATCH, PRODUCT_FIELDS, schema_components

ERROR = {
    "description": "Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["status", "code", "message"],
        }
    },
    "required": ["error"],
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string", **schema}}


def _with_headers(response: dict[str, Any], **headers: dict[str, Any]) -> dict[str, Any]:
    return {**response, "headers": {name.replace("_", "-"): header for name, header in headers.items()}}


def _created(
    schema: dict[str, Any], path: str, *, id_pattern: str = "[1-9][0-9]*", status: str = "201", what: str = "Created"
) -> dict[str, Any]:
    """The answer that makes a resource: its body and `Location: /<path>/<id>`."""
    location = _header("Where the new resource is.", {"pattern": f"^/{path}/{id_pattern}$"})
    return {status: _with_headers(_json(schema, what), Location=location)}


NO_STORE = _header("Never cached: the answer is per client or changes at once.", {"const": "no-store"})
ETAG = _header(
    "Weak validator of the body: send it back in If-None-Match for a 304.", {"pattern": r'^W/"[0-9a-f]{16}"$'}
)
CACHE_CONTROL = _header(
    "`public, max-age=` HTTP_CACHE_MAX_AGE_SECONDS on catalog reads (`no-cache` when 0); `no-store` elsewhere.",
    {"pattern": "^(public, max-age=[1-9][0-9]*|no-cache|no-store|private, no-cache)$"},
)


RETRY_AFTER = {
    "description": "Seconds to wait before trying again; sent with `database_unavailable` and `shard_moving`.",
    "required": False,
    "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
}
UNAVAILABLE = {
    "503": _with_headers(
        {
            **ERROR,
            "description": "Unavailable for now: `database_unavailable` when the Postgres primary this request"
            " needs is unreachable, restarting or read-only (a failover; the message says whether a write was"
            " applied); also `shard_moving`, `queue_unavailable` and `upstream_unavailable` where those apply",
        },
        Retry_After=RETRY_AFTER,
    )
}
"""The answer of every operation that reads or writes Postgres while the primary cannot serve it."""

NOT_MODIFIED = _with_headers({"description": "Not modified"}, ETag=ETAG, Cache_Control=CACHE_CONTROL)


def _read(response: dict[str, Any]) -> dict[str, Any]:
    """A GET's answers: 200 with an ETag and a Cache-Control, or 304 when If-None-Match has that ETag."""
    return {"200": _with_headers(response, ETag=ETAG, Cache_Control=CACHE_CONTROL), "304": NOT_MODIFIED}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
LIMIT = _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20})
CURSOR = _query("cursor", "next_cursor of the previous page; absent for the first page.", {"type": "string"})
_FIELD = "(" + "|".join(PRODUCT_FIELDS) + ")"
TOPIC = "(products|orders|product:[1-9][0-9]{0,18})"
FIELDS = _query(
    "fields",
    f"Product fields to return, comma-separated, at least one of: {', '.join(PRODUCT_FIELDS)}."
    " Blanks around a name, empty items and repeats are ignored.",
    # what validation.query_fields accepts: items are optional blanks around an optional field name
    {"type": "string", "pattern": rf"^(\s*,)*\s*{_FIELD}\s*(,\s*({_FIELD}\s*)?)*$"},
)


def _op(summary: str, responses: dict[str, Any], *, params: list[Any] = (), body: str | None = None) -> dict[str, Any]:  # type: ignore[assignment]
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, "4XX": ERROR}}
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


SELECTED = {  # a Product, or the fields of one that `fields` named
    "type": "object",
    "properties": {name: _ref(f"Product/properties/{name}") for name in PRODUCT_FIELDS},
    "minProperties": 1,
    "additionalProperties": False,
}
BATCH = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "items": SELECTED},
        "missing": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["items", "missing"],
}
USER_ID = {
    "name": "user_id",
    "in": "query",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}
JOB_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{JOB_ID.pattern}$"},
}
JOB = {"type": "object", "properties": {name: {"type": "string"} for name in ("id", "kind", "status")}}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    """A keyset page: its items and the cursor of the next page (null on the last)."""
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": item}, "next_cursor": {"type": ["string", "null"]}},
        "required": ["items", "next_cursor"],
    }


PATHS: dict[str, dict[str, Any]] = {
    "/products": {
        "get": _op(
            "A page of products by id (keyset).",
            {**_read(_json(_page(SELECTED))), **UNAVAILABLE},
            params=[LIMIT, CURSOR, FIELDS],
        ),
        "post": _op(
            "Create a product.",
            {**_created(_ref("Product"), "products"), **UNAVAILABLE},
            body="ProductCreate",
        ),
    },
    "/products/batch-get": {
        "post": _op(
            f"Up to {MAX_BATCH} products by id, in request order; unknown ids are listed under `missing`.",
            {"200": _json(BATCH), **UNAVAILABLE},
            params=[FIELDS],
            body="BatchGet",
        )
    },
    "/products/{id}": {
        "get": _op(
            "One product (cache-aside); supports If-None-Match.",
            {**_read(_json(SELECTED, "The product, or with `fields` only the fields named")), **UNAVAILABLE},
            params=[ID, FIELDS],
        ),
        "patch": _op(
            "Change a product; invalidates its cache entry.",
            {"200": _json(_ref("Product")), **UNAVAILABLE},
            params=[ID],
            body="ProductUpdate",
        ),
    },
    "/users": {
        "post": _op(
            "Sign up.",
            {**_created(_ref("User"), "users"), **UNAVAILABLE},
            body="UserCreate",
        )
    },
    "/users/{id}": {"get": _op("One user.", {**_read(_json(_ref("User"))), **UNAVAILABLE}, params=[ID])},
    "/users/{id}/orders": {
        "get": _op(
            "A user's orders with items (keyset).",
            {**_read(_json(_page(_ref("Order")))), **UNAVAILABLE},
            params=[ID, LIMIT, CURSOR],
        )
    },
    "/sessions": {
        "post": _op(
            "Log in: sets the HttpOnly session cookie `sid`.",
            {
                "201": _with_headers(
                    _json({"type": "object"}, "Logged in"),
                    Set_Cookie=_header("The session: `sid`, HttpOnly.", {"pattern": "^sid=[^;]+;.*HttpOnly"}),
                ),
                **UNAVAILABLE,
            },
            body="Login",
        ),
        "delete": _op(
            "Log out: deletes the session and the cookie.",
            {
                "204": _with_headers(
                    {"description": "Logged out"},
                    Set_Cookie=_header("Expires `sid`.", {"pattern": '^sid=("")?;.*Max-Age=0'}),
                )
            },
        ),
    },
    "/me": {"get": _op("The logged-in user.", {**_read(_json(_ref("User"))), **UNAVAILABLE})},
    "/orders": {
        "post": _op(
            "Place an order.",
            {**_created(_ref("Order"), "orders"), **UNAVAILABLE},
            body="OrderCreate",
        ),
        "get": _op(
            "A user's orders with items (keyset); the auth role's /users/{id}/orders calls this.",
            {**_read(_json(_page(_ref("Order")))), **UNAVAILABLE},
            params=[USER_ID, LIMIT, CURSOR],
        ),
    },
    "/jobs": {
        "post": _op(
            "Enqueue a job {kind, payload}; kinds: order-receipt {order_id}.",
            {**_created(JOB, "jobs", id_pattern=JOB_ID.pattern, status="202", what="Queued"), **UNAVAILABLE},
            body="JobCreate",
        )
    },
    "/jobs/{id}": {
        "get": _op(
            "A job's status (queued, done, failed) with its result or error.",
            _read(_json(JOB)),
            params=[JOB_ID_PARAM],
        )
    },
    "/orders/{id}": {"get": _op("One order with items.", {**_read(_json(_ref("Order"))), **UNAVAILABLE}, params=[ID])},
    "/events": {
        "get": _op(
            "Server-Sent Events of product and order changes; resume with Last-Event-ID.",
            {
                "200": {
                    "description": "text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "503": _with_headers(
                    {**ERROR, "description": "`at_capacity` (REALTIME_MAX_CONNECTIONS) or `draining`: try another"},
                    Retry_After=RETRY_AFTER,
                ),
            },
        )
    },
    "/ws": {
        "get": _op(
            "WebSocket of product and order changes by topic (same bus as /events), logged in by the session cookie."
            " Query: topics=products,product:<id>,orders and last_id=<event id> to resume. Frames: see the README."
            " Close 4000 (slow consumer) and 1012 (drain) mean: reconnect and resume from your last id.",
            {
                "101": {"description": "Switching Protocols: the WebSocket is open"},
                "400": {**ERROR, "description": "`invalid_parameter`: bad topics or last_id (the message says)"},
                "401": {**ERROR, "description": "`not_logged_in`: no valid session cookie"},
                "404": {**ERROR, "description": "`events_disabled`: EVENTS_ENABLED is off"},
                "426": {**ERROR, "description": "`upgrade_required`: a plain GET, not a WebSocket handshake"},
                "503": _with_headers(
                    {**ERROR, "description": "`at_capacity` (REALTIME_MAX_CONNECTIONS) or `draining`: try another"},
                    Retry_After=RETRY_AFTER,
                ),
            },
            params=[
                _query(
                    "topics",
                    "Comma-separated: products, product:<id>, orders (the caller's own orders); at most 100.",
                    {"type": "string", "pattern": f"^({TOPIC}(,{TOPIC})*)?$"},
                ),
                _query(
                    "last_id",
                    "The id of the last event seen: what was missed since is replayed first.",
                    {"type": "string", "pattern": "^[0-9]{1,20}-[0-9]{1,20}$"},
                ),
            ],
        )
    },
    "/realtime/connections": {
        "get": _op(
            "Open realtime connections (WebSocket and SSE): this process's and the total over every process.",
            {
                "200": _with_headers(
                    _json(
                        {
                            "type": "object",
                            "properties": {
                                "process": {"type": "integer", "minimum": 0},
                                "total": {"type": "integer", "minimum": 0},
                                "processes": {"type": "integer", "minimum": 0},
                            },
                            "required": ["process", "total", "processes"],
                            "additionalProperties": False,
                        }
                    ),
                    Cache_Control=NO_STORE,
                ),
                "404": {**ERROR, "description": "`events_disabled`: EVENTS_ENABLED is off"},
            },
        )
    },
    "/healthz": {
        "get": _op(
            "Liveness: the process answers; no dependency is called.",
            {"200": _with_headers(_json({"type": "object"}), Cache_Control=NO_STORE)},
        )
    },
    "/readyz": {
        "get": _op(
            "Readiness: Postgres primary and Redis reachable.",
            {
                "200": _with_headers(_json({"type": "object"}), Cache_Control=NO_STORE),
                "503": _with_headers(_json({"type": "object"}, "Not ready"), Cache_Control=NO_STORE),
            },
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics.",
            {"200": {"description": "Text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
    },
}


def _job_schemas() -> dict[str, Any]:
    """JobCreate, what api.jobs.submit_job accepts (a kind of jobkinds.KINDS and its payload), and the payloads."""
    models = {kind: model for kind, (model, _) in KINDS.items()}
    _, payloads = msgspec.json.schema_components(models.values(), ref_template="#/components/schemas/{name}")
    job = {
        "type": "object",
        "description": f"payload: at most {MAX_PAYLOAD_BYTES} bytes of JSON",
        "properties": {"kind": {"enum": list(models)}, "payload": {"type": "object"}},
        "required": ["kind", "payload"],
        "additionalProperties": False,
        "oneOf": [
            {"properties": {"kind": {"const": kind}, "payload": _ref(model.__name__)}} for kind, model in models.items()
        ],
    }
    return {**payloads, "JobCreate": job}


def _with_method_not_allowed(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every operation documents the 405 its path gives other methods, with the exact Allow header."""
    documented = {}
    for path, operations in paths.items():
        methods = {method.upper() for method in operations} | ({"HEAD"} if "get" in operations else set())
        allow = _header("The methods this path has.", {"const": ", ".join(sorted(methods))})
        not_allowed = _with_headers({**ERROR, "description": "Method not allowed"}, Allow=allow)
        documented[path] = {
            method: {**op, "responses": {**op["responses"], "405": not_allowed}} for method, op in operations.items()
        }
    return documented


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "scaleladder sample service", "version": "0.1.0"},
        "paths": _with_method_not_allowed(PATHS),
        "components": {"schemas": {**schema_components(), **_job_schemas(), "Error": ERROR_SCHEMA}},
    }
