"""Memory probes over the real server: client input must not grow a worker's memory without bound.

Each probe warms the server up, reads the RSS of every process of its tree (psutil), sends thousands of
requests that differ only in client input, and reads the RSS again. A memo keyed by the raw input grows by
about the input's size per request (4,000 × 15 KB = 60 MB); a bounded one by nearly nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from catalog_testlib import Database, ServerProcess, Services, drop_database, make_database

PRODUCTS = "/api/consumer/products"
REQUESTS = 4_000
MAX_GROWTH_MB = 5.0


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    """A database for one test."""
    database = make_database(services, template_db, tmp_path)
    yield database
    drop_database(database)


def tree_rss_mb(srv: ServerProcess) -> float:
    """Resident memory of the server and all its processes, MB."""
    assert srv.proc is not None
    root = psutil.Process(srv.proc.pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 1e6


def send(srv: ServerProcess, headers_of: list[dict[str, str]]) -> list[int]:
    """One GET of the products page per header set, over 8 keep-alive connections; the status codes."""
    with (
        httpx.Client(limits=httpx.Limits(max_connections=8), timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        return list(
            pool.map(lambda h: client.get(srv.base_url + PRODUCTS, headers=h).status_code, headers_of)
        )


def long_forwarded_for(i: int) -> dict[str, str]:
    """A 15 KB X-Forwarded-For, different each time: a forged left part before one real client address."""
    return {"X-Forwarded-For": f"{i:06d}" + "a" * 15_000 + ", 203.0.113.9"}


@pytest.mark.parametrize("trusted", ["127.0.0.1/32", ""], ids=["trusted-proxy", "no-trusted-proxy"])
def test_distinct_huge_forwarded_for_headers_do_not_grow_memory(
    db: Database, services: Services, tmp_path: Path, trusted: str
) -> None:
    # Default limits: after the first burst nearly every answer is a 429, which must not be memoised either.
    srv = ServerProcess(db, services, tmp_path, RATE_LIMIT_ENABLED="true", TRUSTED_PROXIES=trusted).start()
    try:
        warm = send(srv, [long_forwarded_for(-i) for i in range(1, 501)])  # allocator, caches, leases
        assert set(warm) <= {200, 429} and 429 in warm
        before = tree_rss_mb(srv)
        statuses = send(srv, [long_forwarded_for(i) for i in range(REQUESTS)])
        growth = tree_rss_mb(srv) - before
        print(f"{REQUESTS} distinct 15 KB X-Forwarded-For (TRUSTED_PROXIES={trusted!r}): {growth:+.1f} MB")
        assert set(statuses) <= {200, 429}, set(statuses)
        assert statuses.count(429) > REQUESTS // 2  # one client (203.0.113.9 or the peer) over its quota
        assert growth < MAX_GROWTH_MB, f"{REQUESTS} distinct 15 KB headers grew the server by {growth:.1f} MB"
    finally:
        srv.stop()
