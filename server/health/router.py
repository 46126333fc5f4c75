"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from server.db.pool import pool_usage
from server.health.schemas import HEALTH_SCHEMA, READINESS_SCHEMA
from server.http import Call, Reply, Route
from server.state import AppState

_HEALTH = orjson.dumps({"status": "ok"})


def routes(state: AppState) -> list[Route]:
    """`/health` (the process answers) and `/ready` (it can serve: database, Redis, image index)."""

    async def health(_call: Call) -> Reply:
        return Reply(_HEALTH, conditional=False, cache_control="no-store", compressible=False)

    async def ready(_call: Call) -> Reply:
        res = state.res
        doc: dict[str, Any] = {"pid": res.pid, "uptime_s": round(time.time() - res.started_at, 1)}
        db_ok = True
        try:
            async with asyncio.timeout(1.0):
                async with res.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:  # readiness reports any failure, it never raises
            db_ok = False
            doc["database_error"] = type(exc).__name__
        doc["database"] = {"ok": db_ok, "pool": pool_usage(res.pool)}
        redis_state: dict[str, Any] = {"configured": res.redis is not None}
        if res.redis is not None:
            try:
                async with asyncio.timeout(0.5):
                    redis_state["ok"] = bool(await res.redis.ping())
                if redis_state["ok"]:
                    res.cache.redis_reachable()
            except Exception as exc:
                redis_state["ok"] = False
                redis_state["error"] = type(exc).__name__
        doc["redis"] = redis_state
        doc["catalog"] = {
            "epoch": res.catalog.epoch,
            "version": res.catalog.version,
            "listening": res.catalog.listening,
            "reconnects": res.catalog.reconnects,
            "map_loads": res.catalog.map_loads,
            "generation": res.generation,
        }
        doc["images"] = {
            "count": res.images.count,
            "fingerprint": res.images.fingerprint,
            "compiled": res.using_compiled,
            "files_cache_hits": state.image_store.hits,
            "files_cache_misses": state.image_store.misses,
        }
        doc["cache"] = res.cache.snapshot()
        doc["rate_limit"] = {
            "enabled": res.limiter.enabled,
            "degraded": res.limiter.degraded,
            "redis_errors": res.limiter.redis_errors,
        }
        doc["status"] = "ready" if db_ok and res.catalog.listening else "unavailable"
        return Reply(
            orjson.dumps(doc),
            status=200 if doc["status"] == "ready" else 503,
            conditional=False,
            cache_control="no-store",
        )

    return [
        Route(
            "GET",
            "/health",
            health,
            summary="Liveness",
            tag="health",
            group="health",
            errors=(),
            response_schema=HEALTH_SCHEMA,
        ),
        Route(
            "GET",
            "/ready",
            ready,
            summary="Readiness: database, Redis, catalog listener, image index",
            tag="health",
            group="health",
            errors=(503,),
            response_schema=READINESS_SCHEMA,
        ),
    ]
