"""The service's own numbers during a load run: /metrics scraped every second, then drawn as the panels of
docs/grafana-dashboard.json (request rate, p50/p95/p99 per route, errors, cache hit ratio, pool, limiter,
freshness lag, requests in flight).

    python -m loadtests.metrics_dash scrape --url URL --seconds 30 --out metrics.jsonl
    python -m loadtests.metrics_dash plot metrics.jsonl out.png

`make load` does both around its Locust run (metrics.jsonl and metrics.png in the report directory) when
/metrics answers the load machine (loopback is a metrics network by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
KEEP = (
    "http_server_request_duration_seconds_bucket",
    "http_server_request_duration_seconds_count",
    "http_server_active_requests",
    "page_cache_requests_total",
    "db_pool_",
    "ratelimit_",
    "catalog_change_lag_seconds",
)
HTTP = "http_server_request_duration_seconds"


def parse(text: str) -> dict[str, float]:
    """`name{a="x",b="y"}` -> value for the families the panels use (labels sorted, as one key)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or not line.startswith(KEEP):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(2) or ""))
            key = m.group(1) + json.dumps(labels, sort_keys=True, separators=(",", ":"))
            out[key] = float(m.group(3))
    return out


def scrape_once(url: str) -> dict[str, float]:
    """One scrape of URL/metrics, parsed."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as resp:
        return parse(resp.read().decode())


@contextlib.contextmanager
def recording(url: str, out: Path, interval_s: float = 1.0) -> Iterator[Path]:
    """Scrape every `interval_s` into `out` (JSON lines) while the block runs."""
    stop = threading.Event()
    try:
        scrape_once(url)
    except OSError as exc:
        print(f"metrics_dash: {url}/metrics not readable ({exc}); no metrics picture", file=sys.stderr)
        yield out
        return

    def loop() -> None:
        with out.open("w") as fh:
            while not stop.is_set():
                started = time.time()
                with contextlib.suppress(OSError):
                    fh.write(json.dumps({"t": started, "m": scrape_once(url)}) + "\n")
                    fh.flush()
                stop.wait(max(0.0, interval_s - (time.time() - started)))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join(10)


def _series(rows: list[dict[str, object]], prefix: str) -> dict[str, list[float]]:
    keys = sorted({k for r in rows for k in r["m"] if k.startswith(prefix)})  # type: ignore[attr-defined]
    return {k: [float(r["m"].get(k, math.nan)) for r in rows] for k in keys}  # type: ignore[attr-defined]


def _labels(key: str) -> dict[str, str]:
    return json.loads(key[key.index("{") :])  # type: ignore[no-any-return]


def _rate(values: list[float], t: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        j = max(0, i - window)
        dt = t[i] - t[j]
        out.append((values[i] - values[j]) / dt if dt > 0 else math.nan)
    return out


def quantile(q: float, bounds: list[float], counts: list[float]) -> float:
    """histogram_quantile over cumulative bucket counts (Prometheus's linear interpolation)."""
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    for i, count in enumerate(counts):
        if count >= rank:
            if math.isinf(bounds[i]):
                return bounds[i - 1] if i else math.nan
            lo, below = (bounds[i - 1], counts[i - 1]) if i else (0.0, 0.0)
            inside = count - below
            return lo + (bounds[i] - lo) * ((rank - below) / inside if inside else 1.0)
    return math.nan


def plot(jsonl: Path, png: Path, window: int = 5) -> Path:
    """The dashboard's panels from a scrape recording (rates and quantiles over `window` scrapes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    if len(rows) < 2:
        raise SystemExit(f"{jsonl}: fewer than two scrapes")
    t0 = rows[0]["t"]
    t = [r["t"] - t0 for r in rows]
    fig, axes = plt.subplots(3, 3, figsize=(15, 10.5))
    ax = axes.flatten()

    counts = _series(rows, f"{HTTP}_count")
    by_route: dict[str, list[float]] = {}
    by_class = {klass: [0.0] * len(rows) for klass in ("2xx/3xx", "4xx", "5xx")}
    for key, values in counts.items():
        lab = _labels(key)
        route = f"{lab['http_request_method']} {lab['http_route']}"
        values = [0.0 if math.isnan(v) else v for v in values]
        by_route[route] = [a + b for a, b in zip(by_route.get(route, [0.0] * len(rows)), values, strict=True)]
        status = lab["http_response_status_code"]
        klass = "5xx" if status.startswith("5") else "4xx" if status.startswith("4") else "2xx/3xx"
        by_class[klass] = [a + b for a, b in zip(by_class[klass], values, strict=True)]
    top = sorted(by_route, key=lambda r: by_route[r][-1], reverse=True)[:6]
    for route in top:
        ax[0].plot(t, _rate(by_route[route], t, window), label=route)
    ax[0].set_title("request rate per route (req/s)")
    ax[0].legend(fontsize=7)

    buckets = _series(rows, f"{HTTP}_bucket")
    for route in top[:3]:
        method, path = route.split(" ", 1)
        per_le: dict[float, list[float]] = {}
        for key, values in buckets.items():
            lab = _labels(key)
            if lab["http_request_method"] == method and lab["http_route"] == path:
                le = float(lab["le"])
                clean = [0.0 if math.isnan(v) else v for v in values]
                per_le[le] = [a + b for a, b in zip(per_le.get(le, [0.0] * len(rows)), clean, strict=True)]
        bounds = sorted(per_le)
        for q, style in ((0.5, ":"), (0.95, "--"), (0.99, "-")):
            series = []
            for i in range(len(rows)):
                j = max(0, i - window)
                series.append(quantile(q, bounds, [per_le[b][i] - per_le[b][j] for b in bounds]) * 1000)
            ax[1].plot(t, series, style, label=f"p{int(q * 100)} {path}")
    ax[1].set_title("latency per route (ms; p50 dotted, p95 dashed, p99 solid)")
    ax[1].set_yscale("log")
    ax[1].legend(fontsize=6)

    for klass, values in by_class.items():
        ax[2].plot(t, _rate(values, t, window), label=klass)
    ax[2].set_title("answers by class (req/s)")
    ax[2].set_yscale("symlog")
    ax[2].legend(fontsize=7)

    cache = _series(rows, "page_cache_requests_total")
    for level in ("l1", "l2"):
        hit = [0.0] * len(rows)
        total = [0.0] * len(rows)
        for key, values in cache.items():
            lab = _labels(key)
            if lab["level"] == level:
                clean = [0.0 if math.isnan(v) else v for v in values]
                total = [a + b for a, b in zip(total, clean, strict=True)]
                if lab["result"] == "hit":
                    hit = [a + b for a, b in zip(hit, clean, strict=True)]
        ratio = []
        for i in range(len(rows)):
            j = max(0, i - window)
            looked = total[i] - total[j]
            ratio.append((hit[i] - hit[j]) / looked if looked > 0 else math.nan)
        ax[3].plot(t, ratio, label=f"{level} hit ratio")
    ax[3].set_ylim(0, 1.05)
    ax[3].set_title("page cache hit ratio")
    ax[3].legend(fontsize=7)

    for name in ("db_pool_connections", "db_pool_connections_in_use", "db_pool_waiting"):
        values = _series(rows, name + "{").get(name + "{}")
        if values:
            ax[4].plot(t, values, label=name.removeprefix("db_pool_"))
    ax[4].set_title("database pool (all processes)")
    ax[4].legend(fontsize=7)

    for key, values in _series(rows, "ratelimit_decisions_total").items():
        lab = _labels(key)
        ax[5].plot(t, _rate(values, t, window), label=f"{lab['group']} {lab['decision']}")
    fallback = _series(rows, "ratelimit_fallback_active").get("ratelimit_fallback_active{}")
    if fallback:
        ax[5].plot(t, fallback, "k:", label="processes on local fallback")
    ax[5].set_title("rate limiter decisions (per s)")
    ax[5].legend(fontsize=7)

    lag_sum = _series(rows, "catalog_change_lag_seconds_sum").get("catalog_change_lag_seconds_sum{}")
    lag_count = _series(rows, "catalog_change_lag_seconds_count").get("catalog_change_lag_seconds_count{}")
    if lag_sum and lag_count:
        mean = []
        for i in range(len(rows)):
            j = max(0, i - window)
            n = lag_count[i] - lag_count[j]
            mean.append((lag_sum[i] - lag_sum[j]) / n * 1000 if n > 0 else math.nan)
        ax[6].plot(t, mean, label="mean")
        per_le: dict[float, list[float]] = {}
        for key, values in _series(rows, "catalog_change_lag_seconds_bucket").items():
            per_le[float(_labels(key)["le"])] = [0.0 if math.isnan(v) else v for v in values]
        bounds = sorted(per_le)
        p99 = []
        for i in range(len(rows)):
            j = max(0, i - window)
            p99.append(quantile(0.99, bounds, [per_le[b][i] - per_le[b][j] for b in bounds]) * 1000)
        ax[6].plot(t, p99, label="p99")
        ax[6].legend(fontsize=7)
    ax[6].set_title("freshness: change heard -> applied (ms)")

    active = _series(rows, "http_server_active_requests").get("http_server_active_requests{}")
    if active:
        ax[7].plot(t, active)
    ax[7].set_title("requests in flight (all processes)")
    ax[8].axis("off")
    ax[8].text(
        0.0,
        0.5,
        f"{len(rows)} scrapes of /metrics, {t[-1]:.0f} s\nrates and quantiles over {window} scrapes\n"
        "each scrape: every process merged",
        fontsize=10,
    )
    for a in ax[:8]:
        a.set_xlabel("seconds")
    fig.suptitle("Catalog API: /metrics during a load run (the panels of docs/grafana-dashboard.json)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    """CLI: scrape or plot."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scrape")
    sc.add_argument("--url", required=True)
    sc.add_argument("--seconds", type=float, default=30)
    sc.add_argument("--out", type=Path, required=True)
    pl = sub.add_parser("plot")
    pl.add_argument("jsonl", type=Path)
    pl.add_argument("png", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "scrape":
        with recording(args.url, args.out):
            time.sleep(args.seconds)
        print(args.out)
    else:
        print(plot(args.jsonl, args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
