"""OpenAPI 3.0 document built from the route table (inputs, bounds, responses, errors) and /docs assets.

/docs is Swagger UI from the `swagger-ui-bundle` package, served by us: no CDN, and a CSP without inline
scripts (the initializer is our own file).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson

from server.errors import ALL_ERRORS
from server.http import Route

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "title_ar", "detail_ar", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "enum": sorted({e.code for e in ALL_ERRORS})},
        "title_ar": {"type": "string"},
        "detail_ar": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message", "message_ar"],
                "properties": {
                    "field": {"type": "string", "example": "query.page_size"},
                    "message": {"type": "string"},
                    "message_ar": {"type": "string"},
                },
            },
        },
    },
}
_ERROR_TEXT = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Body too large",
    422: "Validation failed (names each field)",
    429: "Rate limited",
    500: "Internal error (no internals)",
    503: "Not ready or a dependency is down",
}
_REQUEST_ID_HEADER = {
    "X-Request-ID": {
        "description": "The client's id when it matches [A-Za-z0-9._-]{1,128}, else a new one",
        "schema": {"type": "string"},
    }
}


def _openapi_path(path: str) -> str:
    return "/".join("{" + part[1:] + "}" if part.startswith(":") else part for part in path.split("/"))


def _operation_id(route: Route) -> str:
    return f"{route.method.lower()}_{route.path.strip('/').replace('/', '_').replace(':', '')}"


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _ERROR_TEXT.get(status, "Error"),
        "headers": _REQUEST_ID_HEADER,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def build_spec(routes: Sequence[Route], *, title: str, version: str, server_url: str) -> dict[str, Any]:
    """The OpenAPI document for `routes`."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        ok: dict[str, Any] = {"description": "OK", "headers": _REQUEST_ID_HEADER}
        if route.response_schema is not None:
            ok["content"] = {route.content_type: {"schema": route.response_schema}}
        elif route.content_type != "application/json":
            ok["content"] = {route.content_type: {"schema": {"type": "string", "format": "binary"}}}
        else:
            ok["content"] = {route.content_type: {"schema": {"type": "object"}}}
        responses: dict[str, Any] = {"200": ok}
        if route.response_schema is not None or route.content_type != "application/json":
            responses["304"] = {"description": "Not modified (If-None-Match matched the ETag)"}
        for status in sorted({*route.errors, 500}):
            responses[str(status)] = _problem(status)
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route),
            "tags": [route.tag],
            "parameters": [p.openapi() for p in route.params],
            "responses": responses,
        }
        paths.setdefault(_openapi_path(route.path), {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "Consumer catalog API. Errors are RFC 9457 problem+json in English and Arabic.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {"schemas": {"Problem": _PROBLEM_SCHEMA}},
    }


def spec_bytes(spec: dict[str, Any]) -> bytes:
    """The document as JSON bytes (served as-is)."""
    return orjson.dumps(spec)


DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Catalog API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script><script src="/docs/init.js"></script></body></html>
"""
DOCS_INIT_JS = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
};
"""
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def swagger_asset(name: str) -> bytes:
    """A file of the packaged Swagger UI (`swagger-ui-bundle.js`, `swagger-ui.css`)."""
    root = resources.files("swagger_ui_bundle").joinpath("vendor")
    folder = next(p for p in root.iterdir() if p.name.startswith("swagger-ui-"))
    return folder.joinpath(name).read_bytes()
