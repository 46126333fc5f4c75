"""Liveness (`/health`: the process answers, no I/O) and readiness (`/ready`: see readiness.py)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from server import workers
from server.db.pool import pool_usage
from server.health.readiness import Probe, Readiness, client_address, may_see_details
from server.health.schemas import HEALTH_SCHEMA, READINESS_SCHEMA
from server.http import Call, Reply, Route
from server.resources import Resources
from server.state import AppState

_HEALTH = orjson.dumps({"status": "ok"})


def routes(state: AppState) -> list[Route]:
    """`/health` (the process answers) and `/ready` (it can serve: database, Redis, listener, processes)."""
    s = state.settings
    readiness = Readiness(
        cache_s=s.READY_CACHE_MS / 1000,
        db_timeout_s=s.READY_DB_TIMEOUT_MS / 1000,
        db_fail_after_s=s.READY_DB_FAIL_AFTER_S,
    )
    trusted, detail_networks = tuple(s.TRUSTED_PROXIES), tuple(s.READY_DETAIL_NETWORKS)

    async def health(_call: Call) -> Reply:
        return Reply(_HEALTH, conditional=False, cache_control="no-store", compressible=False)

    async def ready(call: Call) -> Reply:
        addr = client_address(call.request.ip_addr or "", call.headers.get("x-forwarded-for"), trusted)
        detailed = may_see_details(addr, detail_networks)
        details: dict[str, Any] = {}
        if workers.draining():
            status, reasons = "unavailable", ["shutting down"]
        else:
            res = state.res
            probe = await readiness.probe(res)
            status, reasons = _verdict(readiness, probe, res)
            if detailed:
                details = _details(state, readiness, probe, res)
        doc = {"status": status, "reasons": reasons, **details} if detailed else {"status": status}
        return Reply(
            orjson.dumps(doc),
            status=503 if status == "unavailable" else 200,
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
            summary="Readiness: ready or degraded (200), unavailable (503); details for trusted networks",
            tag="health",
            group="health",
            errors=(503,),
            response_schema=READINESS_SCHEMA,
        ),
    ]


def _verdict(readiness: Readiness, probe: Probe, res: Resources) -> tuple[str, list[str]]:
    """(status, reasons): unavailable only for a lasting database failure; impairments degrade."""
    if readiness.db_unavailable(probe):
        return "unavailable", [f"database failing for {readiness.db_fail_after_s:g}s or more"]
    reasons = []
    if not probe.db_ok:
        reasons.append("database probe failed")
    if probe.redis.get("configured") and not probe.redis.get("ok"):
        reasons.append("redis unreachable")
    if res.cache.snapshot().get("degraded"):
        reasons.append("page cache without redis")
    if res.limiter.degraded:
        reasons.append("rate limits local")
    if not res.catalog.listening:
        reasons.append("catalog listener reconnecting")
    reasons.extend(f"background task {name} failing" for name, t in res.tasks.items() if t.failing())
    procs = workers.processes()
    if procs is not None and procs["live"] < procs["expected"]:
        reasons.append(f"{procs['live']} of {procs['expected']} processes serving")
    return ("degraded" if reasons else "ready"), reasons


def _details(state: AppState, readiness: Readiness, probe: Probe, res: Resources) -> dict[str, Any]:
    doc: dict[str, Any] = {"pid": res.pid, "uptime_s": round(time.time() - res.started_at, 1)}
    doc["checked_s_ago"] = round(time.monotonic() - probe.at, 2)
    doc["database"] = {
        "ok": probe.db_ok,
        "probe_ms": probe.db_ms,
        "consecutive_failures": readiness.db_failures,
        "pool": pool_usage(res.pool),
    }
    if probe.db_error:
        doc["database"]["error"] = probe.db_error
    doc["redis"] = probe.redis
    doc["catalog"] = {
        "epoch": res.catalog.epoch,
        "version": res.catalog.version,
        "listening": res.catalog.listening,
        "reconnects": res.catalog.reconnects,
        "map_loads": res.catalog.map_loads,
        "map_updates": res.catalog.map_updates,
        "generation": res.generation,
    }
    if res.live is not None:
        doc["catalog"]["index"] = {**res.live.report(), **res.feed.behind.report()}
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
    doc["tasks"] = {name: t.report() for name, t in res.tasks.items()}
    doc["processes"] = workers.processes()
    doc["probes"] = readiness.probes
    for name, section in state.ready_sections.items():
        doc[name] = section()
    return doc
