"""What the rate limiter adds to a cached page, measured in one process and one run (no HTTP noise).

Builds the real app (create_app), runs a process's real start-up (pool, Redis, LISTEN, image index, page
cache, limiter) against a scratch database, then calls the products route's wrapper directly with Robyn
Request objects, alternating blocks with the limiter on and off, and prints µs per request for each and
the difference. The wrapper is everything Python does for a request; Robyn's own Rust work comes on top,
so the share printed is an upper bound of the limiter's cost in the end-to-end throughput.

    python -m loadtests.bench_wrapper --database-url postgresql://postgres@127.0.0.1/test \\
        --redis-url redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from robyn.robyn import Headers, QueryParams, Request, Url

from server.app import api_routes
from server.db.migrate import migrate
from server.edge import Edge
from server.http import HttpConfig, wrap
from server.images.service import ImageStore
from server.resources import Resources
from server.seed import seed
from server.settings import load_settings
from server.state import AppState


def make_request(page_size: int, peer: str = "127.0.0.1") -> Request:
    """A Robyn request for the products page from `peer`, as the Rust side would build it."""
    query = QueryParams()
    query.set("page_size", str(page_size))
    headers = Headers({"accept-encoding": "gzip", "user-agent": "bench", "host": "127.0.0.1"})
    return Request(
        query,
        headers,
        {},
        "",
        "GET",
        Url("http", "127.0.0.1", "/api/consumer/products"),
        {},
        {},
        None,
        peer,
    )


async def measure(
    dsn: str, redis_url: str, rounds: int, per_round: int, peer: str = "127.0.0.1"
) -> tuple[list[float], list[float]]:
    """µs per request with the limiter off and on, alternating rounds."""
    uploads = Path(tempfile.mkdtemp(prefix="bench-wrapper-"))
    settings = load_settings(
        DATABASE_URL=dsn,
        REDIS_URL=redis_url,
        PROCESSES=2,
        UPLOADS_DIR=uploads,
        RATE_LIMIT_CATALOG="1000000000/60s;burst=10000000",
        REDIS_KEY_PREFIX=f"bw{uuid.uuid4().hex[:6]}:",
    )
    state = AppState(settings)
    edge = Edge(
        policies=settings.rate_policies(),
        trusted_proxies=[],
        cors_origins=[],
        max_body_bytes=settings.MAX_BODY_BYTES,
        max_header_bytes=settings.MAX_HEADER_BYTES,
        max_query_bytes=settings.MAX_QUERY_BYTES,
    )
    config = HttpConfig(edge=edge, slow_request_ms=10_000, server_timing=False)
    route = next(r for r in api_routes(state) if r.path == "/api/consumer/products")
    endpoint = wrap(route, config)
    res = Resources(settings)
    await res.start()
    state.attach(res, ImageStore.from_settings(settings, res.images))
    limiter = res.limiter
    request = make_request(100, peer)
    off: list[float] = []
    on: list[float] = []
    try:
        for _ in range(200):  # warm: the page cache, the lease, the allocator
            edge.limiter = limiter
            await endpoint(request)
        for n in range(rounds):
            for use in (False, True) if n % 2 else (True, False):
                edge.limiter = limiter if use else None
                started = time.perf_counter()
                for _ in range(per_round):
                    await endpoint(request)
                (on if use else off).append((time.perf_counter() - started) / per_round * 1e6)
    finally:
        await res.close()
    return off, on


async def scratch_database(admin_dsn: str) -> tuple[str, str]:
    """Create, migrate and seed a scratch database; return (its DSN, its name)."""
    name = "bench_wrapper_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    base, _, query = admin_dsn.partition("?")
    dsn = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await seed(conn, products=2000, seed_value=1, uploads=Path(tempfile.mkdtemp(prefix="bench-seed-")))
    finally:
        await conn.close()
    return dsn, name


async def drop(admin_dsn: str, name: str) -> None:
    """Drop the scratch database."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


def main() -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a server where a scratch database may be made")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=2000)
    parser.add_argument(
        "--peer", default="127.0.0.1", help="client address (an IPv6 one is also charged to its /48 budget)"
    )
    args = parser.parse_args()
    dsn, name = asyncio.run(scratch_database(args.database_url))
    try:
        off, on = asyncio.run(measure(dsn, args.redis_url, args.rounds, args.per_round, args.peer))
    finally:
        asyncio.run(drop(args.database_url, name))
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(
        f"cached products page (page_size=100) from {args.peer}, wrapper + handler in one process, "
        f"{args.rounds} rounds:"
    )
    print(f"  limiter off: {m_off:6.2f} µs/request (median of rounds)")
    share = m_on / m_off - 1
    print(f"  limiter on : {m_on:6.2f} µs/request  (+{m_on - m_off:.2f} µs, {share:+.1%} of the Python path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
