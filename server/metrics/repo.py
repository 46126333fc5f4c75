"""SQL of /metrics: totals of the recorded sync runs (read at scrape time, cluster-wide)."""

from __future__ import annotations

from typing import Any

SYNC_TOTALS = """
SELECT kind, status, count(*) AS runs,
       coalesce(sum(items_seen), 0) AS items_seen, coalesce(sum(items_changed), 0) AS items_changed,
       coalesce(sum(items_invalid), 0) AS items_invalid,
       coalesce(sum(items_deactivated), 0) AS items_deactivated,
       coalesce(sum(calls), 0) AS calls, coalesce(sum(throttles), 0) AS throttles
FROM sync_runs
GROUP BY kind, status
"""


async def sync_totals(conn: Any) -> list[Any]:
    """One row per (kind, status): runs, items seen/changed/invalid/deactivated, Zoho calls, throttles."""
    return list(await conn.fetch(SYNC_TOTALS))
