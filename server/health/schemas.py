"""Output shapes of /health and /ready (documented in OpenAPI; the router builds the bodies).

`x-conditional: false` tells the OpenAPI builder these answers carry no ETag (never 304), and `x-statuses`
which statuses answer with this body (/ready says 503 with the same document when it cannot serve).
"""

from __future__ import annotations

from typing import Any

_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}

HEALTH_SCHEMA: dict[str, Any] = {
    "title": "Health",
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
    "x-conditional": False,
}

READINESS_SCHEMA: dict[str, Any] = {
    "title": "Readiness",
    "type": "object",
    "required": ["status", "pid", "uptime_s", "database", "redis"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "pid": {"type": "integer"},
        "uptime_s": {"type": "number"},
        "database": {
            "type": "object",
            "required": ["ok"],
            "properties": {"ok": {"type": "boolean"}, "pool": _OBJECT},
        },
        "database_error": {"type": "string", "description": "exception name when the database failed"},
        "redis": {
            "type": "object",
            "required": ["configured"],
            "properties": {
                "configured": {"type": "boolean"},
                "ok": {"type": "boolean"},
                "error": {"type": "string"},
            },
        },
        "catalog": _OBJECT,
        "images": _OBJECT,
        "cache": _OBJECT,
        "rate_limit": _OBJECT,
    },
    "x-conditional": False,
    "x-statuses": [200, 503],
}
