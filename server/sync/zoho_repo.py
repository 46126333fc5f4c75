"""SQL of the Zoho client's shared state (tables of migration 0007)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_ADVISORY_LOCK = "SELECT pg_advisory_xact_lock($1)"
_SELECT_SHARED = "SELECT access_token, refresh_at, mints FROM zoho_tokens WHERE token_key = $1"
_UPSERT_SHARED = """
INSERT INTO zoho_tokens (token_key, access_token, expires_at, refresh_at, mints, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (token_key) DO UPDATE
SET access_token = COALESCE(EXCLUDED.access_token, zoho_tokens.access_token),
    expires_at = COALESCE(EXCLUDED.expires_at, zoho_tokens.expires_at),
    refresh_at = COALESCE(EXCLUDED.refresh_at, zoho_tokens.refresh_at),
    mints = EXCLUDED.mints, updated_at = now()"""
# One statement reserves a call: the row is created or incremented only while under the budget, so
# concurrent processes can never spend more than the budget together.
_RESERVE_CALL = """
INSERT INTO zoho_api_calls AS c (organization_id, day, calls)
VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 1)
ON CONFLICT (organization_id, day) DO UPDATE SET calls = c.calls + 1 WHERE c.calls < $2
RETURNING calls"""
_EXHAUST_DAY = """
INSERT INTO zoho_api_calls AS c (organization_id, day, calls)
VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2)
ON CONFLICT (organization_id, day) DO UPDATE SET calls = GREATEST(c.calls, $2)"""
_CALLS_TODAY = """
SELECT calls FROM zoho_api_calls WHERE organization_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date"""


async def lock_token(conn: asyncpg.Connection, lock_id: int) -> None:
    """Transaction-scoped advisory lock of one refresh token (mints are serialised across processes)."""
    await conn.execute(_ADVISORY_LOCK, lock_id)


async def token_row(conn: asyncpg.Connection, key: str) -> tuple[str | None, datetime | None, list[datetime]]:
    """(access token, time to stop using it, recent mint times) of a refresh token; Nones and [] if none."""
    row = await conn.fetchrow(_SELECT_SHARED, key)
    if row is None:
        return None, None, []
    return row["access_token"], row["refresh_at"], list(row["mints"])


async def save_token(
    conn: asyncpg.Connection,
    key: str,
    token: str | None,
    expires_at: datetime | None,
    refresh_at: datetime | None,
    mints: list[datetime],
) -> None:
    """Store a new access token (None keeps the old one) and the mint times."""
    await conn.execute(_UPSERT_SHARED, key, token, expires_at, refresh_at, mints)


async def reserve_call(conn: asyncpg.Connection, organization_id: str, budget: int) -> int | None:
    """Count one call of today; None when the day's budget is already spent."""
    value = await conn.fetchval(_RESERVE_CALL, organization_id, budget)
    return None if value is None else int(value)


async def exhaust_day(conn: asyncpg.Connection, organization_id: str, budget: int) -> None:
    """Mark today's budget spent (Zoho said code 45), so other runs today stop without calling."""
    await conn.execute(_EXHAUST_DAY, organization_id, budget)


async def calls_today(conn: asyncpg.Connection, organization_id: str) -> int:
    """Calls counted today."""
    return int(await conn.fetchval(_CALLS_TODAY, organization_id) or 0)
