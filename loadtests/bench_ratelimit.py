"""µs of this process's CPU (event-loop time) and of wall time per rate-limit decision, per strategy,
against a real Redis; plus the accuracy of each strategy on the issue's scenario.

    .venv/bin/python loadtests/bench_ratelimit.py [--url redis://127.0.0.1:6379/14] [-n 20000]

Budget (DESIGN.md): the limiter may cost 10 % of ~10k cached req/s per process, i.e. ~10 µs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time
import uuid
from collections.abc import Awaitable, Callable

import redis
import redis.utils

from server.ratelimit import ClientKeys, LocalLimiter, Policy, RateLimiter, Strategy, client_key, parse_policy

BIG = Policy("bench", 1_000_000_000, 60, 1_000_000)  # never denies: measures the allowed path


async def measure(label: str, n: int, step: Callable[[int], Awaitable[object]], concurrency: int = 1) -> None:
    """Run `step(i)` n times (in `concurrency` parallel tasks) and print CPU and wall µs per call."""

    async def worker(offset: int) -> None:
        for i in range(offset, n, concurrency):
            await step(i)

    await worker(0) if concurrency == 1 else None  # warm-up (script load, connections)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"  {label:<58} cpu {cpu / n * 1e6:7.1f} µs   wall {wall / n * 1e6:7.1f} µs")


async def bench(url: str, n: int) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    catalog = parse_policy("catalog", "600/60s;burst=100")
    # A generous timeout: a saturated loop must not flip the limiter to local mode mid-measurement.
    direct = RateLimiter.from_url(url, prefix=prefix, strategy="direct", timeout_s=2)
    lease = RateLimiter.from_url(url, prefix=prefix, processes=1, timeout_s=2)
    local = LocalLimiter(processes=2)
    nolimit = RateLimiter(None)
    try:
        parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python"
        print(f"decisions per scenario: {n}; redis-py {redis.__version__} with the {parser} parser")
        await measure("baseline: awaiting a no-op coroutine (subtract)", n, lambda i: _sync(i))
        print("client identity")
        trusted = [ipaddress.ip_network("10.0.0.0/8")]

        async def ck_plain(i: int) -> object:
            return client_key("203.0.113.7", None, [])

        async def ck_proxy(i: int) -> object:
            return client_key("10.0.0.5", "198.51.100.1, 10.0.0.9", trusted)

        await measure("client_key(peer only)  (+ await overhead)", n, ck_plain)
        await measure("client_key(trusted proxy, 2-hop X-Forwarded-For)", n, ck_proxy)
        keys = ClientKeys(trusted)
        await measure(
            "ClientKeys (memo) trusted proxy, 1000 clients",
            n,
            lambda i: _sync(keys("10.0.0.5", f"198.51.100.{i % 250}, 10.0.{i % 4}.9")),
        )
        huge = ["x" * 15_000 + f"{i}, 198.51.100.{i % 250}" for i in range(100)]
        await measure(
            "ClientKeys, distinct 15 KB X-Forwarded-For (never memoised)",
            n // 4,
            lambda i: _sync(keys("10.0.0.5", huge[i % 100])),
        )

        print("local only (the degraded fallback)")
        await measure("LocalLimiter.check, one hot key", n, lambda i: _sync(local.check(BIG, "ip:1")))
        await measure(
            "RateLimiter(no Redis).check, 1000 keys", n, lambda i: nolimit.check(BIG, f"ip:{i % 1000}")
        )

        print("one EVALSHA per decision (strategy=direct)")
        await measure("hot key, sequential", n // 4, lambda i: direct.check(BIG, "ip:hot-d"))
        await measure("hot key, 50 concurrent", n // 4, lambda i: direct.check(BIG, "ip:hot-d"), 50)
        await measure("1000 keys, 50 concurrent", n // 4, lambda i: direct.check(BIG, f"ip:d{i % 1000}"), 50)

        print(
            f"leases (strategy=lease; lease for BIG = {lease.lease_size(BIG)}, "
            f"catalog 600/60s;burst=100 = {lease.lease_size(catalog)})"
        )
        await measure("hot key allowed, sequential", n, lambda i: lease.check(BIG, "ip:hot-l"))
        await measure("hot key allowed, 50 concurrent", n, lambda i: lease.check(BIG, "ip:hot-l"), 50)
        await measure(
            "hot key over catalog quota (flood: mostly denied)", n, lambda i: lease.check(catalog, "ip:f")
        )
        await measure(
            "1000 keys allowed round-robin, 50 concurrent",
            n,
            lambda i: lease.check(BIG, f"ip:r{i % 1000}"),
            50,
        )
        await measure(
            "every request a new client (worst case), 50 concurrent",
            n // 4,
            lambda i: lease.check(BIG, f"ip:new{i}"),
            50,
        )
        print("provider blocks (lease; IPv6 /48 budget = 16 x the policy, IPv4 /24 budget off)")
        await measure(
            "1000 IPv4 keys round-robin, /24 block off, 50 concurrent",
            n,
            lambda i: lease.check(BIG, f"ip:r{i % 1000}", f"b4:{i % 1000 // 250}"),
            50,
        )
        await measure(
            "1000 /64s of 10 /48s round-robin (+ block), 50 concurrent",
            n,
            lambda i: lease.check(BIG, f"ip:v6r{i % 1000}", f"b6:v6r{i % 10}"),
            50,
        )
        await measure(
            "every request a new /64 of a new /48 (worst case), 50 concurrent",
            n // 4,
            lambda i: lease.check(BIG, f"ip:v6new{i}", f"b6:v6new{i}"),
            50,
        )
        await measure(
            "every request a new /64 of one full /48 (rotation), 50 concurrent",
            n,
            lambda i: lease.check(catalog, f"ip:rot{i}", "b6:rot"),
            50,
        )
        errors = direct.redis_errors + lease.redis_errors + direct.overflows + lease.overflows
        print(f"  (Redis errors/overflows during the measurements: {errors})")
        await accuracy(url, prefix)
    finally:
        for limiter in (direct, lease, nolimit):
            await limiter.aclose()
        with redis.Redis.from_url(url) as client:
            for batch in _batches(client.scan_iter(match=prefix + "*", count=1000)):
                client.delete(*batch)


async def _sync(value: object) -> object:
    return value


def _batches(keys: object, size: int = 500) -> list[list[bytes]]:
    out: list[list[bytes]] = [[]]
    for key in keys:  # type: ignore[attr-defined]
        if len(out[-1]) >= size:
            out.append([])
        out[-1].append(key)
    return [b for b in out if b]


async def accuracy(url: str, prefix: str) -> None:
    """The issue's scenario: 100/60s, 2 processes (and 2 instances), 300 requests -> 100 allowed."""
    policy = parse_policy("acc", "100/60s")
    print("accuracy: 100/60s, 2 limiters with processes=2, 300 requests (expected 100)")
    strategies: tuple[Strategy, ...] = ("lease", "direct")
    for strategy in strategies:
        for mode in ("interleaved", "concurrent", "sticky 1st half, then other"):
            tag = uuid.uuid4().hex[:6]
            lims = [
                RateLimiter.from_url(url, prefix=f"{prefix}{tag}:", processes=2, strategy=strategy)
                for _ in range(2)
            ]
            try:
                if mode == "concurrent" and strategy == "direct":
                    continue
                if mode == "concurrent":
                    ds = await asyncio.gather(*(lims[i % 2].check(policy, "ip:c") for i in range(300)))
                elif mode == "interleaved":
                    ds = [await lims[i % 2].check(policy, "ip:c") for i in range(300)]
                else:  # 58 requests to one process, then all the rest to the other: its lease is stranded
                    ds = [await lims[0 if i < 58 else 1].check(policy, "ip:c") for i in range(300)]
                print(f"  {strategy:<6} {mode:<30} allowed {sum(d.allowed for d in ds)}")
            finally:
                for lim in lims:
                    await lim.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("-n", type=int, default=20_000)
    args = parser.parse_args()
    asyncio.run(bench(args.url, args.n))


if __name__ == "__main__":
    main()
