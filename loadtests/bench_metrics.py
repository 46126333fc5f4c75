"""What metrics and tracing cost a warm cached page, and whether /metrics counts every request: one run.

    python -m loadtests.bench_metrics [-t 2 -c 64 -d 5s] [--passes 3] [--processes 2] [--exact 3000]

1. Per-observation cost in this interpreter: our RouteTimer.observe (a bisect and two additions) against
   prometheus_client's Histogram.observe in multiprocess mode (mmap files), when prometheus_client is
   installed. This is what chose the design (server/metrics/registry.py).
2. Two throw-away services side by side, `on` (defaults: METRICS_ENABLED, TRACE_CONTEXT) and `off`
   (METRICS_ENABLED=false TRACE_CONTEXT=false); wrk on the warm products page (page_size=100, gzip), the
   two alternating for --passes rounds (so drift hits both); prints each pass, the medians and on/off.
3. Exactness: --exact requests sent to `on` over new connections from several threads (both processes
   serve), then `/metrics` summed over all processes must have counted exactly that many more.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from loadtests.bench_http import GZIP, ensure_wrk, parse_wrk
from loadtests.service import LocalService

PAGE = "/api/consumer/products?page=1&page_size=100"
ROUTE = "/api/consumer/products"
OFF = {"METRICS_ENABLED": "false", "TRACE_CONTEXT": "false"}


def observe_costs(n: int = 200_000) -> dict[str, float]:
    """ns per observation: our RouteTimer, and prometheus_client multiprocess when installed."""
    from server.metrics.registry import RouteTimer

    timer = RouteTimer("GET", ROUTE, "catalog")
    out = {"RouteTimer.observe": timeit.timeit(lambda: timer.observe(200, 0.0004), number=n) / n * 1e9}
    base = timeit.timeit(lambda: None, number=n) / n * 1e9
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
            from prometheus_client import CollectorRegistry, Histogram

            hist = Histogram(
                "bench_seconds", "bench", ["method", "route", "status"], registry=CollectorRegistry()
            )
            child = hist.labels("GET", ROUTE, "200")
            out["prometheus_client multiprocess .labels().observe"] = (
                timeit.timeit(lambda: hist.labels("GET", ROUTE, "200").observe(0.0004), number=n) / n * 1e9
            )
            out["prometheus_client multiprocess child.observe"] = (
                timeit.timeit(lambda: child.observe(0.0004), number=n) / n * 1e9
            )
    except ImportError:
        print("(prometheus_client not installed: its row is skipped)", file=sys.stderr)
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {k: v - base for k, v in out.items()}


def wrapper_costs(rounds: int = 40, per_round: int = 3000) -> tuple[float, float]:
    """µs per request through the real wrapper (server/http.py) of a route answering a cached page from
    memory, observability on and off, alternating rounds in one process: (on, off) fastest rounds. No
    HTTP and no database, so the difference is exactly what recording and the trace context cost."""
    import asyncio

    from robyn.robyn import Headers, QueryParams, Request, Url

    from server.cache import Page
    from server.edge import Edge
    from server.http import Call, HttpConfig, Reply, Route, wrap
    from server.metrics.service import Observability
    from server.settings import load_settings

    settings = load_settings(RATE_LIMIT_ENABLED=False)
    page = Page.build(
        b'{"items":[' + b",".join(b'{"id":%d,"name":"product"}' % i for i in range(100)) + b"]}"
    )

    async def handler(_call: Call) -> Reply:
        return Reply(page.body, encoded=page, etag=page.etag)

    route = Route("GET", ROUTE, handler)
    endpoints = {}
    for name, obs in (("on", Observability.from_settings(settings, None)), ("off", None)):
        config = HttpConfig(
            edge=Edge.from_settings(settings), slow_request_ms=10_000, server_timing=False, obs=obs
        )
        endpoints[name] = wrap(route, config)
    headers = Headers({"accept-encoding": "gzip", "user-agent": "bench", "host": "127.0.0.1"})
    request = Request(
        QueryParams(), headers, {}, "", "GET", Url("http", "127.0.0.1", ROUTE), {}, {}, None, "127.0.0.1"
    )
    times: dict[str, list[float]] = {"on": [], "off": []}

    async def run() -> None:
        for endpoint in endpoints.values():
            for _ in range(500):
                await endpoint(request)
        for n in range(rounds):
            for name in ("on", "off") if n % 2 else ("off", "on"):
                endpoint = endpoints[name]
                # CPU time of this process, not wall time: rounds preempted by other jobs on a shared
                # machine do not count their waiting.
                started = time.process_time()
                for _ in range(per_round):
                    await endpoint(request)
                times[name].append((time.process_time() - started) / per_round * 1e6)

    asyncio.run(run())
    # The least of each: rounds only ever get slower than the code (other processes share the cores).
    return min(times["on"]), min(times["off"])


def worker_pids(base: str) -> list[int]:
    """The service's worker pids (detailed /ready, which loopback may read)."""
    with urllib.request.urlopen(base + "/ready", timeout=10) as resp:
        doc = json.loads(resp.read())
    return [int(w["pid"]) for w in doc["processes"]["workers"]]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


@dataclass(frozen=True)
class Pass:
    """One wrk pass: throughput, latency, and the service's CPU time per request."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float  # worker CPU time per request answered


def measure_pass(base: str, pids: list[int], threads: int, conns: int, duration: str) -> Pass:
    """wrk on the warm page, with the workers' CPU time read around it."""
    cmd = [ensure_wrk(), f"-t{threads}", f"-c{conns}", f"-d{duration}", "--latency", "-H"]
    cmd += ["Accept-Encoding: gzip", base + PAGE]
    before = cpu_seconds(pids)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pids) - before
    res = parse_wrk("page", out)
    found = re.search(r"(\d+) requests in", out)
    requests = int(found.group(1)) if found else 0
    return Pass(res.rps, res.p50_ms, res.p99_ms, res.errors, used / max(requests, 1) * 1e6)


def scrape_count(base: str) -> float:
    """http_server_request_duration_seconds_count of GET ROUTE 200, summed (the service sums processes)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = (
        r'^http_server_request_duration_seconds_count\{http_request_method="GET",'
        rf'http_route="{re.escape(ROUTE)}",http_response_status_code="200"\}} (\S+)$'
    )
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def exact(base: str, n: int, threads: int = 8) -> tuple[int, float]:
    """Send n requests (new connection each), return (n, counted by /metrics)."""
    time.sleep(1.0)
    before = scrape_count(base)
    lock = threading.Lock()
    ok = [0]

    def one(_: int) -> None:
        req = urllib.request.Request(base + PAGE, headers={**GZIP, "Connection": "close"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            if resp.status == 200:
                with lock:
                    ok[0] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    time.sleep(1.0)  # > METRICS_FLUSH_S: every process's snapshot includes its share
    return ok[0], scrape_count(base) - before


def main(argv: list[str] | None = None) -> int:
    """Run the three parts and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--connections", type=int, default=64)
    ap.add_argument("-d", "--duration", default="5s")
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--products", type=int, default=10_000)
    ap.add_argument("--exact", type=int, default=3000)
    args = ap.parse_args(argv)

    print("per observation (ns, this interpreter):")
    for name, ns in observe_costs().items():
        print(f"  {name:<52} {ns:8.0f}")

    us_on, us_off = wrapper_costs()
    print(
        f"wrapper, cached page from memory: on {us_on:.2f} us, off {us_off:.2f} us per request "
        f"(+{us_on - us_off:.2f} us)",
        flush=True,
    )

    on = LocalService(products=args.products, processes=args.processes).start()
    off = LocalService(products=args.products, processes=args.processes, env=OFF).start()
    runs: dict[str, list[Pass]] = {"on": [], "off": []}
    try:
        pids = {"on": worker_pids(on.url), "off": worker_pids(off.url)}
        for svc in (on, off):  # warm: the page is cached in every process
            measure_pass(svc.url, [], args.threads, args.connections, "2s")
        for i in range(args.passes):
            for name, svc in (("on", on), ("off", off)) if i % 2 == 0 else (("off", off), ("on", on)):
                res = measure_pass(svc.url, pids[name], args.threads, args.connections, args.duration)
                runs[name].append(res)
                print(
                    f"pass {i + 1} {name:>3}: {res.rps:10,.0f} req/s  p50 {res.p50_ms:6.2f} ms  "
                    f"p99 {res.p99_ms:6.2f} ms  errors {res.errors}  worker CPU {res.cpu_us:6.1f} us/request",
                    flush=True,
                )
        sent, counted = exact(on.url, args.exact)
    finally:
        on.stop()
        off.stop()
    rps_on = statistics.median(r.rps for r in runs["on"])
    rps_off = statistics.median(r.rps for r in runs["off"])
    # Pairs of adjacent passes share the machine's state (other tenants, thermal): the median of their
    # ratios resists drift better than the ratio of medians.
    rps_ratio = statistics.median(a.rps / b.rps for a, b in zip(runs["on"], runs["off"], strict=True))
    cpu_on = statistics.median(r.cpu_us for r in runs["on"])
    cpu_off = statistics.median(r.cpu_us for r in runs["off"])
    cpu_ratio = statistics.median(b.cpu_us / a.cpu_us for a, b in zip(runs["on"], runs["off"], strict=True))
    print(
        f"\nwarm products page (page_size=100, gzip), {args.processes} processes, {args.passes} passes:\n"
        f"  throughput   on {rps_on:10,.0f} req/s   off {rps_off:10,.0f} req/s   "
        f"on/off per pair (median) {rps_ratio:.3f}\n"
        f"  worker CPU   on {cpu_on:8.1f} us/req     off {cpu_off:8.1f} us/req     "
        f"off/on per pair (median) {cpu_ratio:.3f} -> CPU-bound throughput cost {1 - cpu_ratio:+.1%} "
        f"(budget 3 %)\n"
        f"  wrapper      +{us_on - us_off:.2f} us per request (in-process, no HTTP) = "
        f"{(us_on - us_off) / cpu_off:.1%} of the 'off' CPU time per request\n"
        f"exactness: sent {sent} requests, /metrics counted {counted:.0f} "
        f"({'equal' if counted == sent else 'DIFFERENT'})"
    )
    return 0 if counted == sent else 1


if __name__ == "__main__":
    raise SystemExit(main())
