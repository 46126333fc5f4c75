"""The writer of bench_mix.py: stock updates to random active products at a fixed rate, one UPDATE per
transaction (what an ERP sync sends), as its own process beside the load.

    python -m loadtests.mix_writer DSN [--rate 20] [--seconds 10] [--seed 1] [--check-url URL]

Prints `ready` once connected, then one JSON line: commits, seconds, rate, late_max_ms. With --check-url,
after each commit a task asks URL for the product until it shows the new stock (a fresh keep-alive
connection pool of its own, beside the load): `fresh_ms` (commit to the first answer showing it: p50, p99,
max) and `stale`, the answers to requests *sent after the commit* that still showed the old stock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
STOCK_UPDATE = "UPDATE products SET stock_on_hand = $1 WHERE id = $2"
CHECK_FOR_S = 5.0  # a change not served after this long counts as never served


async def _check(
    client: httpx.AsyncClient, product_id: int, stock: int, committed: float, out: list[tuple[float, int]]
) -> None:
    """Ask for the product until it shows `stock`; append (seconds since the commit, stale answers)."""
    stale = 0
    while time.perf_counter() - committed < CHECK_FOR_S:
        with_error = False
        try:
            resp = await client.get(f"/api/consumer/products/{product_id}")
            if resp.status_code == 200 and resp.json().get("stock") == stock:
                out.append((time.perf_counter() - committed, stale))
                return
            with_error = resp.status_code != 200
        except httpx.HTTPError:
            with_error = True
        stale += not with_error
        await asyncio.sleep(0.005)
    out.append((math.inf, stale))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else math.nan


async def write(
    dsn: str, rate: float, seconds: float, seed: int, check_url: str | None = None
) -> dict[str, float]:
    """Commit at `rate` for `seconds` on a fixed schedule (checking each commit is served when `check_url`);
    the achieved figures."""
    conn = await asyncpg.connect(dsn)
    client = httpx.AsyncClient(base_url=check_url, timeout=10) if check_url else None
    checks: list[tuple[float, int]] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM products WHERE is_active")]
        rnd = random.Random(seed)
        print("ready", flush=True)
        start = time.perf_counter()
        commits, late_max = 0, 0.0
        while True:
            due = start + commits / rate  # a fixed schedule: a slow commit is caught up, not dropped
            now = time.perf_counter()
            if due - start >= seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            else:
                late_max = max(late_max, now - due)
            # Autocommit: each statement is its own transaction, as an ERP sync would send them.
            stock, product_id = rnd.randint(0, 500), rnd.choice(ids)
            await conn.execute(STOCK_UPDATE, stock, product_id)
            if client is not None:
                tasks.append(
                    asyncio.create_task(_check(client, product_id, stock, time.perf_counter(), checks))
                )
            commits += 1
        elapsed = time.perf_counter() - start
        figures = {
            "commits": commits,
            "seconds": elapsed,
            "rate": commits / elapsed,
            "late_max_ms": late_max * 1e3,
        }
        if tasks:
            await asyncio.gather(*tasks)
            fresh = [t * 1e3 for t, _ in checks]
            figures |= {
                "fresh_p50_ms": _pct(fresh, 0.5),
                "fresh_p99_ms": _pct(fresh, 0.99),
                "fresh_max_ms": max(fresh),
                "never_served": sum(math.isinf(f) for f in fresh),
                "stale": sum(s for _, s in checks),
            }
        return figures
    finally:
        for task in tasks:
            task.cancel()
        if client is not None:
            await client.aclose()
        await conn.close()


class Writer:
    """The writer as a separate process (inheriting the load cores)."""

    def __init__(
        self, dsn: str, rate: float, seconds: float, seed: int, check_url: str | None = None
    ) -> None:
        cmd = [sys.executable, "-m", "loadtests.mix_writer", dsn]
        cmd += ["--rate", str(rate), "--seconds", str(seconds), "--seed", str(seed)]
        cmd += ["--check-url", check_url] if check_url else []
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise SystemExit(f"mix_writer: the writer did not start ({line or 'no output'})")

    def result(self) -> dict[str, float]:
        """Wait for the writer's figures."""
        out, _ = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0:
            raise SystemExit(f"mix_writer: the writer failed ({self.proc.returncode})")
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m loadtests.mix_writer", description=__doc__.splitlines()[0])
    p.add_argument("dsn")
    p.add_argument("--rate", type=float, default=20.0, help="commits per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--check-url", help="the service: check that each commit is served (freshness)")
    args = p.parse_args(argv)
    figures = asyncio.run(write(args.dsn, args.rate, args.seconds, args.seed, args.check_url))
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
