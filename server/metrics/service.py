"""Observability: this process's registry, its snapshot file, the span exporter, and what a scrape renders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from server.db.pool import pool_usage
from server.metrics import repo
from server.metrics.exposition import render
from server.metrics.registry import Metrics, Sample
from server.metrics.store import SnapshotStore, merge
from server.settings import Settings

if TYPE_CHECKING:
    from server.metrics.otlp import SpanExporter
    from server.resources import Resources

log = logging.getLogger("server.metrics")
SYNC_QUERY_TIMEOUT_S = 1.0


class Observability:
    """Built once by create_app (in the master, before the fork); `start` runs in every worker."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        store: SnapshotStore,
        exporter: SpanExporter | None,
        trace_context: bool,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.exporter = exporter
        self.trace_context = trace_context
        self._flusher: asyncio.Task[None] | None = None
        self._res: Resources | None = None

    @classmethod
    def from_settings(cls, settings: Settings, run_dir: Path | None) -> Observability:
        """From METRICS_* and OTEL_* settings; `run_dir` is this run's snapshot directory (None: own only)."""
        exporter = None
        if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
            from server.metrics.otlp import SpanExporter  # imported only when export is configured

            exporter = SpanExporter(
                settings.OTEL_EXPORTER_OTLP_ENDPOINT,
                service_name=settings.OTEL_SERVICE_NAME,
                interval_s=settings.OTEL_EXPORT_INTERVAL_S,
            )
        return cls(
            metrics=Metrics(enabled=settings.METRICS_ENABLED),
            store=SnapshotStore(run_dir if settings.METRICS_ENABLED else None, settings.METRICS_FLUSH_S),
            exporter=exporter,
            trace_context=settings.TRACE_CONTEXT,
        )

    def start(self, res: Resources, inflight: Callable[[], tuple[int, int]]) -> None:
        """In each worker once its resources exist: collectors, the snapshot loop, the span exporter."""
        self._res = res
        metrics = self.metrics
        self.store.bind(metrics.pid, metrics.started)
        if metrics.enabled:
            metrics.collectors.extend(_collectors(res, inflight))
            metrics.histograms["catalog_change_lag_seconds"] = res.feed.lag
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        if self.exporter is not None:
            res.start_task("otlp_export", self.exporter.run)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.store.flush_s)
            try:
                self.store.write(self.metrics.snapshot())
            except Exception:  # a bug in a collector must not stop the loop for good
                log.exception("metrics snapshot failed")

    async def stop(self) -> None:
        """After the drain: the last snapshot (so nothing this process counted is lost) and spans."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self.metrics.enabled:
            self.store.write(self.metrics.snapshot())
        if self.exporter is not None:
            await self.exporter.close()

    async def scrape(self) -> bytes:
        """The Prometheus text of every process (this one current, the others' last snapshots)."""
        own = self.metrics.snapshot()
        if self._res is not None:
            own["scalars"].update(await _sync_samples(self._res))
        return render(merge(own, self.store))


Collector = Callable[[], Iterable[Sample]]


def _collectors(res: Resources, inflight: Callable[[], tuple[int, int]]) -> list[Collector]:
    images_seen: list[object] = [res.images.fingerprint, time.time()]  # the last fingerprint, when it changed

    def http() -> Iterable[Sample]:
        active, shed = inflight()
        return [("http_server_active_requests", (), active), ("http_server_shed_requests_total", (), shed)]

    def cache() -> Iterable[Sample]:
        s = res.cache.snapshot()
        out: list[Sample] = [
            ("page_cache_l2_errors_total", (), s["l2_errors"]),
            ("page_cache_l1_entries", (), s["l1_entries"]),
            ("page_cache_l1_bytes", (), s["l1_bytes"]),
        ]
        for route, c in list(res.cache.routes.items()):
            out += [
                ("page_cache_requests_total", (route, "l1", "hit"), c.l1_hits),
                ("page_cache_requests_total", (route, "l1", "miss"), c.l1_misses),
                ("page_cache_requests_total", (route, "l2", "hit"), c.l2_hits),
                ("page_cache_requests_total", (route, "l2", "miss"), c.l2_misses),
                ("page_cache_fills_total", (route,), c.fills),
                ("page_cache_waits_total", (route,), c.waits),
            ]
        return out

    def pool() -> Iterable[Sample]:
        if res.pool is None:
            return []
        u = pool_usage(res.pool)
        return [
            ("db_pool_connections", (), u["size"]),
            ("db_pool_connections_in_use", (), u["in_use"]),
            ("db_pool_waiting", (), u["waiters"]),
            ("db_pool_max_connections", (), u["max"]),
            ("db_pool_acquire_timeouts_total", (), u["acquire_timeouts"]),
            ("db_pool_discarded_total", (), u["discarded"]),
        ]

    def limiter() -> Iterable[Sample]:
        lim = res.limiter
        return [
            ("ratelimit_fallback_active", (), 1 if lim.degraded else 0),
            ("ratelimit_redis_errors_total", (), float(getattr(lim, "redis_errors", 0))),
            ("ratelimit_redis_round_trips_total", (), float(getattr(lim, "round_trips", 0))),
        ]

    def catalog() -> Iterable[Sample]:
        images = res.images
        if images.fingerprint != images_seen[0]:
            images_seen[:] = [images.fingerprint, time.time()]
        return [
            ("image_index_images", (), images.count),
            ("image_index_refresh_timestamp_seconds", (), float(images_seen[1])),  # type: ignore[arg-type]
            ("catalog_version", (), res.catalog.version),
        ]

    return [http, cache, pool, limiter, catalog]


async def _sync_samples(res: Resources) -> dict[str, list[list[object]]]:
    """Sync runs, items, calls and throttles from sync_runs (cluster-wide, CLI runs included)."""
    out: dict[str, list[list[object]]] = {}
    try:
        async with res.pool.acquire(timeout=SYNC_QUERY_TIMEOUT_S) as conn:
            rows = await repo.sync_totals(conn)
    except Exception as exc:  # the scrape still answers, without these families
        log.warning("sync totals unavailable for /metrics: %s", type(exc).__name__)
        return out
    for row in rows:
        kind = row["kind"]
        out.setdefault("sync_runs_total", []).append([[kind, row["status"]], row["runs"]])
        for outcome in ("seen", "changed", "invalid", "deactivated"):
            out.setdefault("sync_items_total", []).append([[kind, outcome], row[f"items_{outcome}"]])
    totals: dict[str, list[float]] = {}
    for row in rows:
        t = totals.setdefault(row["kind"], [0, 0])
        t[0] += row["calls"]
        t[1] += row["throttles"]
    out["sync_zoho_calls_total"] = [[[k], v[0]] for k, v in totals.items()]
    out["sync_zoho_throttles_total"] = [[[k], v[1]] for k, v in totals.items()]
    return out
