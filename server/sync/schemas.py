"""Inputs and answer shapes of the sync's admin routes (`/api/admin/sync…`)."""

from __future__ import annotations

from typing import Any

from server.body import Field, JsonBody
from server.params import Param

RUN_ID = Param("id", "int", location="path", minimum=1, maximum=2**63 - 1, description="sync_runs.id")
SYNC_START = JsonBody(
    "SyncStart",
    (
        Field(
            "full",
            "bool",
            description="true: read every item and deactivate those Zoho no longer has (default false)",
        ),
    ),
    optional=True,
    description="Optional; no body (or `{}`) starts an incremental run.",
)


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


_COUNTS = (
    "items_seen",
    "items_changed",
    "items_invalid",
    "items_deactivated",
    "categories_changed",
    "price_lists_changed",
    "prices_changed",
    "images_fetched",
    "images_removed",
    "images_failed",
    "images_deferred",
    "calls",
    "throttles",
)
SYNC_RUN_SCHEMA: dict[str, Any] = {
    "title": "SyncRun",
    "type": "object",
    "required": ["id", "kind", "status", "started_at", "finished_at", "resumed", *_COUNTS, "error", "href"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string", "enum": ["incremental", "full"]},
        "status": {
            "type": "string",
            "enum": ["running", "succeeded", "failed", "paused"],
            "description": "paused: the day's call budget is spent; the next run resumes where it stopped",
        },
        "started_at": {"type": "string", "format": "date-time"},
        "finished_at": _nullable("string", format="date-time"),
        "resumed": {"type": "boolean", "description": "continued an unfinished sweep"},
        **{name: {"type": "integer", "minimum": 0} for name in _COUNTS},
        "watermark_before": _nullable("string", format="date-time"),
        "watermark_after": _nullable("string", format="date-time"),
        "error": _nullable("string", description="why it failed or paused (credentials masked)"),
        "href": {"type": "string", "description": "this run: /api/admin/sync/runs/{id}"},
    },
}
SYNC_STARTED_SCHEMA: dict[str, Any] = {**SYNC_RUN_SCHEMA, "x-statuses": [202], "x-headers": ["Location"]}
SYNC_RUN_PAGE_SCHEMA: dict[str, Any] = {
    "title": "SyncRunPage",
    "type": "object",
    "required": ["items", "page", "page_size", "total", "pages"],
    "properties": {
        "items": {"type": "array", "items": SYNC_RUN_SCHEMA},
        "page": {"type": "integer", "minimum": 1},
        "page_size": {"type": "integer", "minimum": 1, "maximum": 200},
        "total": {"type": "integer", "minimum": 0},
        "pages": {"type": "integer", "minimum": 0},
    },
}
