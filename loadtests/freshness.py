"""Freshness: how long after a commit does every process serve the new data?

100 trials of: commit a price change with plain SQL, then poll every Robyn process (one pinned keep-alive
connection per process, found through the `proc` entry of Server-Timing) until each serves the new price.
Prints p50/p99/max of the time until the *last* process served it, and exits 1 when the targets are missed
(p99 < 100 ms, max < 1 s). Without --url it starts a throw-away service (embedded PostgreSQL/Redis).

    python -m loadtests.freshness [--trials 100] [--url URL --database-url DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import time
from decimal import Decimal

import asyncpg
import httpx

from loadtests.service import LocalService

_PROC = re.compile(r'proc;desc="(\d+)"')
_BUMP = (
    "UPDATE product_prices SET price = price + 0.01 WHERE product_id = $1 "
    "AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer') RETURNING price"
)


def pinned_clients(url: str, processes: int, tries: int = 200) -> dict[int, httpx.Client]:
    """One keep-alive client per server process (the kernel assigns a process per connection)."""
    found: dict[int, httpx.Client] = {}
    for _ in range(tries):
        client = httpx.Client(base_url=url, limits=httpx.Limits(max_connections=1), timeout=5)
        timing = client.get("/health").headers.get("server-timing", "")
        match = _PROC.search(timing)
        if match is None:
            client.close()
            raise SystemExit("the service must run with SERVER_TIMING=true (it reports the serving pid)")
        pid = int(match.group(1))
        if pid in found:
            client.close()
        else:
            found[pid] = client
        if len(found) == processes:
            return found
    raise SystemExit(f"found {len(found)} of {processes} processes")


async def trial(conn: asyncpg.Connection, clients: dict[int, httpx.Client], product_id: int) -> float:
    """Seconds from the commit until the last process served the new price."""
    for client in clients.values():  # warm every process's cache with the old price
        client.get(f"/api/consumer/products/{product_id}")
    new_price: Decimal = await conn.fetchval(_BUMP, product_id)
    committed = time.perf_counter()
    waiting = dict(clients)
    deadline = committed + 5
    while waiting and time.perf_counter() < deadline:
        for pid, client in list(waiting.items()):
            doc = client.get(f"/api/consumer/products/{product_id}").json()
            if doc["price"] == format(new_price, "f"):
                del waiting[pid]
    if waiting:
        raise SystemExit(f"processes {sorted(waiting)} never served the change")
    return time.perf_counter() - committed


async def run(url: str, dsn: str, processes: int, trials: int) -> list[float]:
    """All trials' propagation times."""
    clients = pinned_clients(url, processes)
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM products WHERE is_active")]
        rng = random.Random(1)
        return [await trial(conn, clients, rng.choice(ids)) for _ in range(trials)]
    finally:
        await conn.close()
        for client in clients.values():
            client.close()


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--url", help="a running service started with SERVER_TIMING=true")
    parser.add_argument("--database-url", help="its database (needed with --url)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--products", type=int, default=2000)
    args = parser.parse_args()
    if args.url:
        if not args.database_url:
            parser.error("--url needs --database-url")
        times = asyncio.run(run(args.url, args.database_url, args.processes, args.trials))
    else:
        with LocalService(args.products, args.processes, env={"SERVER_TIMING": "true"}) as svc:
            assert svc.data_dir is not None
            dsn = f"postgresql://postgres@/catalog?host={svc.data_dir / 'pg'}"
            times = asyncio.run(run(svc.url, dsn, args.processes, args.trials))
    ms = sorted(t * 1000 for t in times)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"freshness over {len(ms)} commits, {args.processes} processes: "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms (targets: p99 < 100 ms, max < 1000 ms)"
    )
    return 0 if p99 < 100 and ms[-1] < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
