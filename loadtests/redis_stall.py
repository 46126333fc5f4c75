"""What a stalled Redis costs a request: a throw-away service (rate limits on, page cache on) with its own
Redis, which is frozen (SIGSTOP: connections stay open, nothing answers, the worst case for timeouts) while
distinct uncached pages are fetched one after another; then thawed. Prints the latency of each phase.

    python -m loadtests.redis_stall [--requests 30]

Bound: 127.0.0.1 only, a few hundred sequential requests.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from loadtests.service import LocalService
from server.embedded import EmbeddedRedis


def _phase(client: httpx.Client, tag: str, n: int, offset: int) -> list[float]:
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        # A distinct first page each time: an L1 miss that goes to Redis (L2) and to the database.
        resp = client.get("/api/consumer/products", params={"min_price": str(offset + i), "page_size": "5"})
        latencies.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{tag}: got {resp.status_code}")
    print(
        f"{tag:<22} first {latencies[0]:6.1f} ms  median {statistics.median(latencies):5.1f} ms  "
        f"max {max(latencies):6.1f} ms  ({n} requests, all 200)"
    )
    return latencies


def main() -> int:
    """Run the stall probe; exit 1 if a stall added more than 120 ms to any request (one limiter timeout
    and some noise)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--products", type=int, default=2000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="catalog-stall-"))
    redis = EmbeddedRedis(folder / "redis")
    url = redis.start()
    redis_pid = redis.pid
    assert redis_pid is not None
    env = {"REDIS_URL": url, "RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_CATALOG": "100000/60s;burst=10000"}
    try:
        with (
            LocalService(products=args.products, processes=1, env=env) as service,
            httpx.Client(base_url=service.url, timeout=10) as client,
        ):
            _phase(client, "warm-up", args.requests, 10_000)
            up = _phase(client, "Redis up", args.requests, 20_000)
            os.kill(redis_pid, signal.SIGSTOP)
            try:
                stalled = _phase(client, "Redis stalled", args.requests, 30_000)
                time.sleep(1.5)
                later = _phase(client, "Redis stalled, later", args.requests, 40_000)
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            time.sleep(2)
            _phase(client, "Redis back", args.requests, 50_000)
    finally:
        redis.stop()
    added = max(stalled + later) - statistics.median(up)
    print(f"worst added latency during the stall: {added:.1f} ms (budget ~100 ms)")
    return 0 if added < 120 else 1


if __name__ == "__main__":
    raise SystemExit(main())
