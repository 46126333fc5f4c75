"""This process's numbers: plain in-memory counters, cheap enough for every request.

The request histogram is the hot one (every request of every route): each wrapped route owns a RouteTimer,
whose rows (one per status seen) are preallocated lists indexed by bucket, so recording a request costs a
dict lookup, a bisect over 17 bounds and two additions (~0.3 µs, `make bench-metrics`), against ~5 µs for
prometheus_client's multiprocess mode (a mmap write per bucket, sum and count). Everything else is either
counted by its own component already (page cache, pool, limiter: read by collectors when a snapshot is
taken, so it costs the request nothing) or rare (sign-ins, orders, slow queries: `inc`).

Other processes see these numbers through the snapshot files of server/metrics/store.py.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from server.metrics.families import BY_NAME, HTTP_BUCKETS, Family

Labels = tuple[str, ...]
# A collector returns (family name, label values, value) for counters and gauges it reads from elsewhere.
Sample = tuple[str, Labels, float]
Collector = Callable[[], Iterable[Sample]]
_ROW = len(HTTP_BUCKETS) + 2  # one count per bucket, +Inf, then the sum of seconds


def route_template(path: str) -> str:
    """Robyn's `/products/:id` and `/*path` as OpenTelemetry's `http.route`: `/products/{id}`, `/{path}`."""
    parts = []
    for part in path.split("/"):
        if part.startswith((":", "*")):
            part = "{" + part[1:] + "}"
        parts.append(part)
    return "/".join(parts)


class RouteTimer:
    """Request counts and durations of one route and method, per status."""

    __slots__ = ("group", "method", "route", "rows")

    def __init__(self, method: str, route: str, group: str | None) -> None:
        self.method, self.route, self.group = method, route, group
        self.rows: dict[int, list[float]] = {}

    def observe(self, status: int, seconds: float) -> None:
        """One request answered with `status` after `seconds`."""
        row = self.rows.get(status)
        if row is None:
            row = self.rows[status] = [0.0] * _ROW
        row[bisect_left(HTTP_BUCKETS, seconds)] += 1
        row[-1] += seconds


class Histogram:
    """A histogram without labels, for rare events (catalog change lag)."""

    __slots__ = ("bounds", "row")

    def __init__(self, family: Family) -> None:
        self.bounds = family.buckets
        self.row = [0.0] * (len(family.buckets) + 2)

    @classmethod
    def of(cls, name: str) -> Histogram:
        """A histogram of the family `name` (families.py)."""
        return cls(BY_NAME[name])

    def observe(self, value: float) -> None:
        """Record one value."""
        self.row[bisect_left(self.bounds, value)] += 1
        self.row[-1] += value


class Metrics:
    """The registry of one process (a forked child starts from zero: see `reset`)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.timers: list[RouteTimer] = []
        self.collectors: list[Collector] = []
        self.histograms: dict[str, Histogram] = {}
        self.orders = OrderMetrics(self)
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        """Zero every number (each process counts its own; the master's must not be inherited)."""
        self.counters: dict[str, dict[Labels, float]] = {}
        for timer in self.timers:
            timer.rows = {}
        for hist in self.histograms.values():
            hist.row = [0.0] * len(hist.row)
        self.collectors = []
        self.pid = os.getpid()
        self.started = time.time()

    def timer(self, method: str, path: str, group: str | None) -> RouteTimer | None:
        """The RouteTimer of a wrapped route (None when metrics are off: the wrapper skips recording)."""
        if not self.enabled:
            return None
        timer = RouteTimer(method, route_template(path), group)
        self.timers.append(timer)
        return timer

    def histogram(self, name: str) -> Histogram:
        """The process's histogram `name` (a family without labels)."""
        hist = self.histograms.get(name)
        if hist is None:
            hist = self.histograms[name] = Histogram(BY_NAME[name])
        return hist

    def inc(self, name: str, labels: Labels = (), n: float = 1) -> None:
        """Add `n` to counter `name` with these label values (rare events only: a dict lookup or two)."""
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = {}
        series[labels] = series.get(labels, 0) + n

    def snapshot(self) -> dict[str, Any]:
        """Every number of this process, as JSON-able lists (what store.py writes and merges)."""
        scalars: dict[str, dict[Labels, float]] = {k: dict(v) for k, v in self.counters.items()}
        for collect in self.collectors:
            for name, labels, value in collect():
                series = scalars.setdefault(name, {})
                series[labels] = series.get(labels, 0) + value
        decisions = scalars.setdefault("ratelimit_decisions_total", {})
        hists: dict[str, list[list[Any]]] = {}
        http = hists["http_server_request_duration_seconds"] = []
        for timer in self.timers:
            for status, row in timer.rows.items():
                http.append([[timer.method, timer.route, str(status)], list(row)])
                if timer.group is not None:
                    key = (timer.group, "limited" if status == 429 else "allowed")
                    decisions[key] = decisions.get(key, 0) + sum(row[:-1])
        for name, hist in self.histograms.items():
            hists[name] = [[[], list(hist.row)]]
        return {
            "pid": self.pid,
            "at": time.time(),
            "scalars": {name: [[list(k), v] for k, v in series.items()] for name, series in scalars.items()},
            "histograms": hists,
        }


class OrderMetrics:
    """What the orders service records (server/orders calls these; nothing else needs to know the names).

    `metrics.orders.placed()` after an order is committed; `metrics.orders.refused(exc.code)` when one is
    refused with an AppError (out of stock, idempotency conflict, validation ...): `reason` is the error's
    stable code, a bounded set.
    """

    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def placed(self, n: int = 1) -> None:
        """Count `n` orders placed (orders_placed_total)."""
        self._metrics.inc("orders_placed_total", (), n)

    def refused(self, reason: str) -> None:
        """Count one order refused for `reason` (orders_refused_total{reason}); reason: a stable code."""
        self._metrics.inc("orders_refused_total", (reason[:64],))
