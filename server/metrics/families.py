"""Every metric the service exports: name, type, help, label names and how processes' values combine.

Names follow the OpenTelemetry semantic conventions as Prometheus spells them (`http.server.request.duration`
in seconds -> `http_server_request_duration_seconds`, attributes `http.request.method` ->
`http_request_method`). This table is the documented list (README "Metrics") and what /metrics renders:
a family listed here always has its HELP/TYPE lines, even before its first sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]
# How a family's samples from several processes combine: counters and histograms always add up (dead
# processes included: their last values stay); gauges add up over live processes ("livesum") or take the
# largest live value ("max": the same fact seen by every process, e.g. the image index size).
Combine = Literal["sum", "livesum", "max"]

# Buckets of the request duration histogram, seconds: OpenTelemetry's advice for
# http.server.request.duration, with 0.5/1/2.5 ms below it (a cached page takes well under 1 ms here).
HTTP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    combine: Combine = "sum"
    buckets: tuple[float, ...] = ()


HTTP_LABELS = ("http_request_method", "http_route", "http_response_status_code")

FAMILIES: tuple[Family, ...] = (
    Family(
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP server requests (route = the route template, never the raw path).",
        HTTP_LABELS,
        buckets=HTTP_BUCKETS,
    ),
    Family(
        "http_server_active_requests",
        "gauge",
        "HTTP requests being handled now, all processes.",
        combine="livesum",
    ),
    Family("http_server_shed_requests_total", "counter", "Requests refused with 503 (MAX_INFLIGHT)."),
    Family(
        "page_cache_requests_total",
        "counter",
        "Page cache lookups by route, level (l1 per process, l2 Redis) and result (hit, miss).",
        ("route", "level", "result"),
    ),
    Family("page_cache_fills_total", "counter", "Pages made (queried and serialized), by route.", ("route",)),
    Family(
        "page_cache_waits_total",
        "counter",
        "Requests that waited for another request's fill of the same page instead of querying, by route.",
        ("route",),
    ),
    Family("page_cache_l2_errors_total", "counter", "Redis errors of the page cache (L1 and SQL serve)."),
    Family("page_cache_l1_entries", "gauge", "Pages held in the per-process L1 caches.", combine="livesum"),
    Family("page_cache_l1_bytes", "gauge", "Bytes held in the per-process L1 caches.", combine="livesum"),
    Family("db_pool_connections", "gauge", "Pool connections open.", combine="livesum"),
    Family("db_pool_connections_in_use", "gauge", "Pool connections lent to requests.", combine="livesum"),
    Family("db_pool_waiting", "gauge", "Requests waiting for a pool connection.", combine="livesum"),
    Family("db_pool_max_connections", "gauge", "Pool bound (DB_POOL_MAX), all processes.", combine="livesum"),
    Family("db_pool_acquire_timeouts_total", "counter", "Acquires that gave up (503)."),
    Family("db_pool_discarded_total", "counter", "Connections discarded after a connection fault."),
    Family(
        "db_slow_queries_total",
        "counter",
        "Statements slower than SLOW_QUERY_MS, by statement name (repo constant).",
        ("statement",),
    ),
    Family(
        "ratelimit_decisions_total",
        "counter",
        "Rate-limit decisions by route group: allowed, or limited (429).",
        ("group", "decision"),
    ),
    Family(
        "ratelimit_fallback_active",
        "gauge",
        "Processes whose limits are local because Redis is unreachable.",
        combine="livesum",
    ),
    Family("ratelimit_redis_errors_total", "counter", "Redis errors of the rate limiter."),
    Family("ratelimit_redis_round_trips_total", "counter", "Redis round trips of the rate limiter."),
    Family("image_index_images", "gauge", "Products with an image in the image index.", combine="max"),
    Family(
        "image_index_refresh_timestamp_seconds",
        "gauge",
        "Unix time of the image index's last rescan (latest of the processes).",
        combine="max",
    ),
    Family(
        "catalog_change_lag_seconds",
        "histogram",
        "Catalog change: committed (database clock) to applied in this process's list index.",
        buckets=LAG_BUCKETS,
    ),
    Family("catalog_version", "gauge", "Latest catalog version a process has heard of.", combine="max"),
    Family(
        "sync_runs_total",
        "counter",
        "Zoho sync runs recorded in sync_runs, by kind and status (cluster-wide, read at scrape).",
        ("kind", "status"),
    ),
    Family(
        "sync_items_total",
        "counter",
        "Items the recorded sync runs saw or changed (cluster-wide).",
        ("kind", "outcome"),
    ),
    Family("sync_zoho_calls_total", "counter", "Zoho API calls of the recorded sync runs.", ("kind",)),
    Family("sync_zoho_throttles_total", "counter", "Zoho throttling answers met by sync runs.", ("kind",)),
    Family(
        "auth_sign_ins_total",
        "counter",
        "Password sign-ins by outcome: ok (signed in), mfa_required, failed, throttled.",
        ("outcome",),
    ),
    Family("auth_mfa_verifications_total", "counter", "MFA code checks: ok, failed.", ("outcome",)),
    Family("orders_placed_total", "counter", "Orders placed."),
    Family("orders_refused_total", "counter", "Orders refused, by reason (an error code).", ("reason",)),
    Family("process_metrics_snapshots", "gauge", "Processes whose numbers this scrape merged."),
)

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
