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
    "description": (
        "200 ready or degraded (serving, something impaired: see reasons), 503 unavailable (database"
        " failing for READY_DB_FAIL_AFTER_S, or shutting down). Clients outside READY_DETAIL_NETWORKS get"
        " the status only."
    ),
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "degraded", "unavailable"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "pid": {"type": "integer"},
        "uptime_s": {"type": "number"},
        "checked_s_ago": {"type": "number", "description": "age of the cached probe result"},
        "probes": {"type": "integer"},
        "database": {
            "type": "object",
            "required": ["ok"],
            "properties": {
                "ok": {"type": "boolean"},
                "probe_ms": {"type": "number"},
                "consecutive_failures": {"type": "integer"},
                "error": {"type": "string", "description": "exception name when the probe failed"},
                "pool": _OBJECT,
            },
        },
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
        "tasks": {
            "type": "object",
            "description": "per task: failing, failures, consecutive_failures, restarts, last_error",
            "additionalProperties": _OBJECT,
        },
        "sync": {
            "type": "object",
            "description": (
                "the Zoho sync: configured (credentials set), schedule (enabled, interval_s, full_at,"
                " next_incremental_at, next_full_at), last_run (id, kind, status, started_at, finished_at),"
                " running_here; never a secret"
            ),
            "additionalProperties": True,
        },
        "processes": {
            "type": "object",
            "nullable": True,
            "description": "the worker pool: expected, live (serving), replaced, workers (pid, state)",
            "additionalProperties": True,
        },
    },
    "x-conditional": False,
    "x-statuses": [200, 503],
}
