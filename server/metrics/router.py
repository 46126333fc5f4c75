"""`GET /metrics`: every process's numbers in the Prometheus text format, for trusted networks or a token."""

from __future__ import annotations

import hmac

from server.errors import NotFound
from server.health.readiness import client_address, may_see_details
from server.http import Call, Reply, Route
from server.metrics.exposition import CONTENT_TYPE
from server.metrics.service import Observability
from server.state import AppState

METRICS_SCHEMA = {
    "type": "string",
    "description": "Prometheus text format 0.0.4 (see README, Metrics)",
    "x-conditional": False,
}


def routes(state: AppState) -> list[Route]:
    """The scrape endpoint (404 in our error format for clients that may not see it: it stays unlisted to
    them, as if it did not exist)."""
    settings = state.settings
    obs = state.obs if state.obs is not None else Observability.from_settings(settings, None)
    trusted, networks = tuple(settings.TRUSTED_PROXIES), tuple(settings.METRICS_NETWORKS)
    token = settings.METRICS_TOKEN.get_secret_value().encode()

    def allowed(call: Call) -> bool:
        if token:
            given = call.headers.get("authorization") or ""
            scheme, _, value = given.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token):
                return True
        addr = client_address(call.request.ip_addr or "", call.headers.get("x-forwarded-for"), trusted)
        return may_see_details(addr, networks)

    async def metrics(call: Call) -> Reply:
        if not settings.METRICS_ENABLED or not allowed(call):
            raise NotFound()
        return Reply(
            await obs.scrape(), content_type=CONTENT_TYPE, conditional=False, cache_control="no-store"
        )

    return [
        Route(
            "GET",
            "/metrics",
            metrics,
            summary="Prometheus metrics of every process (trusted networks or METRICS_TOKEN; else 404)",
            tag="health",
            group="health",
            content_type="text/plain",
            errors=(404,),
            response_schema=METRICS_SCHEMA,
        )
    ]
