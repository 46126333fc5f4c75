"""Helpers of the Zoho client tests: settings for a fake, a pool and a Redis client per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from fakes.zoho import FakeZoho, LoggedRequest

from server.settings import Settings, load_settings
from server.sync.zoho import ZohoClient

# What a sync test's run leaves out, unless the test says otherwise: Zoho's per-minute budget (the fake is
# local), retries (a test names the failure it provokes), image downloads, and pacing by the host's CPU
# pressure (a run's length must not follow the CI host's load: test_pace.py tests that rule).
QUIET_RUN = {
    "ZOHO_RATE_PER_MIN": "100000",
    "ZOHO_MAX_RETRIES": "0",
    "ZOHO_SYNC_IMAGES_PER_RUN": "0",
    "ZOHO_SYNC_CPU_PRESSURE": "0",
}


def zoho_settings(fake: FakeZoho, **overrides: Any) -> Settings:
    """Settings pointing at the fake, with a Redis key prefix of their own."""
    values: dict[str, Any] = {**fake.settings_env(), "REDIS_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}:"}
    values.update(overrides)
    return load_settings(**values)


@contextlib.asynccontextmanager
async def shared(db_url: str | None, redis_url: str | None) -> AsyncIterator[tuple[Any, Any]]:
    """(asyncpg pool or None, Redis client or None) for one test, closed afterwards."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4) if db_url else None
    redis = aioredis.Redis.from_url(redis_url) if redis_url else None
    try:
        yield pool, redis
    finally:
        if pool is not None:
            await pool.close()
        if redis is not None:
            await redis.aclose()


def client(settings: Settings, pool: Any = None, redis: Any = None, **kw: Any) -> ZohoClient:
    """A client with fast backoff (tests wait for Retry-After, not for exponential jitter)."""
    kw.setdefault("backoff_base_s", 0.05)
    return ZohoClient.from_settings(settings, pool=pool, redis=redis, **kw)


def statuses(log: list[LoggedRequest]) -> list[tuple[int, int | None]]:
    """(HTTP status, Zoho code) of each logged request."""
    return [(r.status, r.code) for r in log]


def unique_org() -> str:
    """An organisation id of its own (the daily counts in the shared database are per organisation)."""
    return str(uuid.uuid4().int % 10**11)


def own_account() -> dict[str, str]:
    """FakeZoho arguments for an organisation and a refresh token of its own: the daily counts in the
    module's shared database are per organisation, and its token row (with the mint times the 10-per-600-s
    cap counts) per refresh token, so one test's mints never count against another's."""
    return {"organization_id": unique_org(), "refresh_token": f"1000.{uuid.uuid4().hex}"}
