"""OpenAPI 3.0 document built from the route table (inputs, bounds, responses, errors) and /docs assets.

Every status an operation can answer is documented with its headers, derived from the Route and the
wrapper's behaviour (server/http.py): 413/414/431 from the size checks and 422 from input validation on
every route, 429 where the route's group has a rate-limit policy, 503 when the database is down, 304 where
the answer carries an ETag. Response bodies are named schemas: a schema dict with a `title` becomes one
`components/schemas` entry, referenced wherever it is used. Three keys of a route's response schema are facts
about the answer, not the body, and are taken out: `x-conditional: false` (no ETag, never 304) and
`x-statuses` (statuses answered with this body, default [200]), and `x-headers` (headers of those answers
beyond the usual, e.g. `Location` of a 202).

/docs is Swagger UI from the `swagger-ui-bundle` package, served by us: no CDN, and a CSP without inline
scripts (the initializer is our own file).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from importlib import resources
from typing import Any

import orjson

from server.body import JsonBody
from server.errors import AppError, Forbidden, Unauthorized, error_classes, error_codes
from server.http import SAFE_METHODS, Route

_FACTS = ("x-conditional", "x-statuses", "x-headers")
_OK_DESCRIPTIONS = {200: "OK", 201: "Created", 202: "Accepted: carried out in the background"}
SIZE_STATUSES = (413, 414, 431)  # the wrapper checks sizes before anything else, on every route

FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "FieldError",
    "type": "object",
    "required": ["field", "message", "message_ar"],
    "properties": {
        "field": {"type": "string", "example": "query.page_size"},
        "message": {"type": "string"},
        "message_ar": {"type": "string"},
    },
}
_ANY_JSON: dict[str, Any] = {"title": "JsonObject", "type": "object", "description": "A JSON object"}
_BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def problem_schema() -> dict[str, Any]:
    """RFC 9457 problem+json with our fields; `code` is every registered error code, nothing else."""
    return {
        "title": "Problem",
        "type": "object",
        "required": ["type", "title", "status", "detail", "code", "title_ar", "detail_ar", "request_id"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": error_codes()},
            "title_ar": {"type": "string"},
            "detail_ar": {"type": "string"},
            "request_id": {"type": "string"},
            "errors": {"type": "array", "items": FIELD_ERROR_SCHEMA},
        },
    }


def _header(description: str, *, required: bool = False, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {"description": description, "required": required, "schema": schema}


HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": _header(
        "The client's X-Request-ID when it matches [A-Za-z0-9._-]{1,128}, else a new one", required=True
    ),
    "ETag": _header("Strong validator of this body; send it back in If-None-Match for a 304", required=True),
    "Cache-Control": _header("How long clients and proxies may reuse the answer"),
    "RateLimit": _header(
        'Quota left in this route group and seconds until it is full again, e.g. `"catalog";r=99;t=1` '
        "(IETF draft-10; on rate-limited route groups)"
    ),
    "RateLimit-Policy": _header(
        'The route group\'s policy, e.g. `"catalog";q=600;w=60` (IETF draft-10; on rate-limited route groups)'
    ),
    "Retry-After": _header("Seconds to wait before retrying", required=True, pattern=r"^[0-9]+$"),
    "Allow": _header("The methods this path answers", required=True),
    "Content-Range": _header(
        "The byte range sent, e.g. `bytes 0-99/5000` (on 416: `bytes */5000`)",
        required=True,
        pattern=r"^bytes ([0-9]+-[0-9]+|\*)/[0-9]+$",
    ),
    "Location": _header(
        "Where the started or created resource is (a sync run: /api/admin/sync/runs/{id}; an order: "
        "/api/consumer/orders/{id})",
        required=True,
    ),
    "Idempotent-Replayed": _header(
        "`true` when this is the stored answer of an earlier request with the same Idempotency-Key",
        pattern="^true$",
    ),
    "Accept-Ranges": _header("`bytes`: single byte ranges are served (Range, If-Range)"),
    "WWW-Authenticate": _header(
        'The Bearer challenge (RFC 6750), e.g. `Bearer realm="catalog", error="invalid_token"`', required=True
    ),
}
_ERROR_HEADERS: dict[int, tuple[str, ...]] = {
    429: ("Retry-After",),
    503: ("Retry-After",),
    405: ("Allow",),
    416: ("Content-Range",),
}
# Statuses shared by several classes (403): headers by code.
_CODE_HEADERS: dict[str, tuple[str, ...]] = {
    Unauthorized.code: ("WWW-Authenticate",),
    Forbidden.code: ("WWW-Authenticate",),
}


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _response_name(error: type[AppError]) -> str:
    return "InternalError" if error is AppError else error.__name__


def _error_responses() -> tuple[dict[int, str], dict[str, Any]]:
    """status -> components/responses name, and those responses: one per registered error class. A
    status shared by several classes is documented by its main class (`documents_status`), whose
    description names every code answered with that status."""
    names: dict[int, str] = {}
    responses: dict[str, Any] = {}
    codes: dict[int, list[str]] = {}
    for error in error_classes():
        codes.setdefault(error.status, []).append(error.code)
    for error in error_classes():
        name = _response_name(error)
        if error.documents_status or error.status not in names:
            names[error.status] = name
        own = _CODE_HEADERS.get(error.code, _ERROR_HEADERS.get(error.status, ()))
        headers = ("X-Request-ID", *own, "RateLimit", "RateLimit-Policy")
        others = [c for c in codes[error.status] if c != error.code]
        also = f"; with status {error.status} also " + ", ".join(f"`{c}`" for c in others) if others else ""
        responses[name] = {
            "description": f"{error.title} (`code`: `{error.code}`{also})",
            "headers": _headers(*headers),
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    responses["NotModified"] = {
        "description": "Not modified: If-None-Match matched the ETag (no body)",
        "headers": _headers("ETag", "X-Request-ID", "RateLimit", "RateLimit-Policy"),
    }
    return names, responses


def hoist(schema: Any, named: dict[str, Any]) -> Any:
    """`schema` with every titled sub-schema moved into `named` and replaced by a $ref to it."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k not in _FACTS}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = hoist(out[key], named)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [hoist(s, named) for s in out[key]]
    if "properties" in out:
        out["properties"] = {k: hoist(v, named) for k, v in out["properties"].items()}
    title = out.get("title")
    if not isinstance(title, str):
        return out
    if named.setdefault(title, out) != out:
        raise ValueError(f"two different schemas are named {title!r}")
    return {"$ref": f"#/components/schemas/{title}"}


def _openapi_path(path: str) -> str:
    return "/".join("{" + part[1:] + "}" if part.startswith(":") else part for part in path.split("/"))


def _operation_id(route: Route) -> str:
    return f"{route.method.lower()}_{route.path.strip('/').replace('/', '_').replace(':', '')}"


def _responses(
    route: Route, *, limited: bool, errors: dict[int, str], named: dict[str, Any]
) -> dict[str, Any]:
    declared = route.response_schema or {}
    conditional = declared.get("x-conditional", True) and route.method in SAFE_METHODS
    if route.response_schema is not None:
        body = hoist(route.response_schema, named)
    else:
        body = hoist(_ANY_JSON, named) if route.content_type == "application/json" else _BINARY
    ok_headers = ["X-Request-ID", "Cache-Control"]
    if conditional:
        ok_headers.insert(1, "ETag")
    if limited:
        ok_headers += ["RateLimit", "RateLimit-Policy"]
    if route.ranges:
        ok_headers.append("Accept-Ranges")
    ok_headers += declared.get("x-headers", [])
    responses: dict[str, Any] = {}
    if route.ranges:
        responses["206"] = {
            "description": "One byte range of the file (`Range: bytes=…`, honouring `If-Range`)",
            "headers": _headers("Content-Range", *ok_headers),
            "content": {route.content_type: {"schema": body}},
        }
    for status in declared.get("x-statuses", [200]):
        responses[str(status)] = {
            "description": _OK_DESCRIPTIONS.get(status, f"The same document, answered with status {status}"),
            "headers": _headers(*(h for h in ok_headers if status == 200 or h != "ETag")),
            "content": {route.content_type: {"schema": body}},
        }
    statuses = {*route.errors, *SIZE_STATUSES, 500, 503}
    if conditional:
        statuses.add(304)
    if not route.any_query:
        statuses.add(422)  # unknown or malformed query parameters
    if limited:
        statuses.add(429)
    if route.body is not None:
        statuses |= {415, 422} | ({400} if isinstance(route.body, JsonBody) else set())
    # 401 and 403 are the authentication's (403 is shared with CORS preflights' origin_not_allowed).
    own = {401: _response_name(Unauthorized), 403: _response_name(Forbidden)} if route.auth else {}
    if route.auth is not None:
        statuses.add(401)
        if route.auth.scopes:
            statuses.add(403)
    for status in sorted(statuses):
        if str(status) not in responses:
            name = "NotModified" if status == 304 else own.get(status) or errors[status]
            responses[str(status)] = {"$ref": f"#/components/responses/{name}"}
    return dict(sorted(responses.items()))


def build_spec(
    routes: Sequence[Route],
    *,
    title: str,
    version: str,
    server_url: str,
    rate_limited: Collection[str],
) -> dict[str, Any]:
    """The OpenAPI document for `routes`; `rate_limited` names the route groups that have a policy."""
    named: dict[str, Any] = {}
    hoist(problem_schema(), named)
    errors, error_responses = _error_responses()
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, Any] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": _operation_id(route),
            "tags": [route.tag],
            "parameters": [p.openapi() for p in route.params],
            "responses": _responses(route, limited=route.group in rate_limited, errors=errors, named=named),
        }
        if route.body is not None:
            body = route.body.openapi()
            for media in body["content"].values():
                media["schema"] = hoist(media["schema"], named)
            op["requestBody"] = body
        if route.auth is not None:
            scheme = route.auth.authenticator.scheme
            schemes[scheme] = {
                "type": "http",
                "scheme": "bearer",
                "description": route.auth.authenticator.description,
            }
            # OpenAPI 3.0 lists scopes only for OAuth2/OIDC schemes: a bearer scheme's list stays empty,
            # so the scopes a route needs are stated in its description.
            op["security"] = [{scheme: []}] if route.auth.mode == "required" else [{scheme: []}, {}]
            if route.auth.scopes:
                op["description"] = "Needs scope " + ", ".join(f"`{s}`" for s in route.auth.scopes) + "."
        paths.setdefault(_openapi_path(route.path), {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "Consumer catalog API. Errors are RFC 9457 problem+json in English and Arabic; `code` is "
                "stable. A method a path does not list answers 405 with `Allow` "
                "(components/responses/MethodNotAllowed); an unknown path answers 404; a CORS preflight "
                "from an origin outside the allowlist answers 403 `origin_not_allowed`."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(named.items())),
            "headers": HEADERS,
            "responses": error_responses,
            **({"securitySchemes": dict(sorted(schemes.items()))} if schemes else {}),
        },
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
