"""What the outside review broke in the page cache, over the real server: poisoning through ambiguous keys,
pages nobody reuses filling Redis, unknown ids costing a query each, and the shared fill lock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from catalog_testlib import Database, ServerProcess, Services, run

from server.cache import CacheConfig, Made, PageCache
from server.embedded import EmbeddedRedis

PRODUCTS = "/api/consumer/products"


def queries(resp: httpx.Response) -> int:
    """Queries this request ran (Server-Timing, enabled by the suite)."""
    found = re.search(r'desc="(\d+) queries"', resp.headers["server-timing"])
    assert found, resp.headers["server-timing"]
    return int(found.group(1))


def page_keys(services: Services, server: ServerProcess) -> list[str]:
    """The page keys this server stored in Redis."""
    prefix = server.env["REDIS_KEY_PREFIX"] + "page:"
    client = redis_sync.Redis.from_url(services.redis_url)
    try:
        return [k.decode() for k in client.scan_iter(match=prefix + "*", count=1000)]
    finally:
        client.close()


def a_name_word(database: Database) -> str:
    """A word from an active product's name: a search that finds something."""
    name = run(database.fetch("SELECT name FROM products WHERE is_active ORDER BY id LIMIT 1"))[0][0]
    return str(name).split()[0].lower()


def test_a_value_holding_separators_cannot_poison_another_querys_page(
    api: httpx.Client, database: Database
) -> None:
    word = a_name_word(database)
    forged = api.get(PRODUCTS, params={"q": f"{word}&min_price=0", "page_size": "3"})
    assert forged.status_code == 200 and forged.json()["total"] == 0
    real = api.get(PRODUCTS, params={"q": word, "min_price": "0", "page_size": "3"})
    assert real.status_code == 200
    assert real.json()["total"] > 0, "the forged query's empty page was served for the real one"


@pytest.fixture(scope="module")
def sql_server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The SQL path (no index): its answers are the ones that go to Redis (L2)."""
    proc = ServerProcess(database, services, tmp_path_factory.mktemp("sql"), CATALOG_INDEX="false").start()
    yield proc
    proc.stop()


SPELLINGS = ("{w}", "1"), ("{W}", "1.0"), (" {T} ", "1.00"), ("{w}", "01")


def test_spellings_of_one_query_share_one_cached_page(
    api: httpx.Client,
    database: Database,
    services: Services,
    server: ServerProcess,
    sql_server: ServerProcess,
) -> None:
    word = a_name_word(database)
    spellings = [(q.format(w=word, W=word.upper(), T=word.title()), price) for q, price in SPELLINGS]
    with sql_server.client() as sql:
        for client in (sql, api):
            answers = [
                client.get(PRODUCTS, params={"q": q, "min_price": price, "sort": "price"})
                for q, price in spellings
            ]
            assert len({r.content for r in answers}) == 1
            assert len({r.headers["etag"] for r in answers}) == 1
    # Both servers share the database's key prefix; the generation tells them apart (the index's is
    # "epoch:i<structure>:images"). SQL answers share one Redis entry; index answers stay in each process's
    # memory (L1) and write none.
    mine = [k for k in page_keys(services, server) if '"price"]' in k and "1.00" in k]
    from_index = [k for k in mine if re.search(r"page:[^:|]+:i\d", k)]
    assert len(mine) - len(from_index) == 1 and not from_index, mine


def test_deep_pages_and_empty_results_stay_out_of_redis(
    services: Services, sql_server: ServerProcess
) -> None:
    with sql_server.client() as api:
        assert api.get(PRODUCTS, params={"page": "40", "page_size": "5", "sort": "-name"}).status_code == 200
        empty = api.get(PRODUCTS, params={"q": "no-such-product-zzz", "sort": "-name"})
        assert empty.status_code == 200 and empty.json()["total"] == 0
        shallow = api.get(PRODUCTS, params={"page": "2", "page_size": "5", "sort": "-name"})
        assert shallow.status_code == 200 and shallow.json()["items"]
    keys = [k for k in page_keys(services, sql_server) if '"-name"]' in k]
    assert len(keys) == 1 and "[2,5," in keys[0], keys


def test_an_unknown_product_is_remembered_until_the_catalog_changes(
    api: httpx.Client, database: Database
) -> None:
    missing = run(database.fetch("SELECT max(id) + 1000 FROM products"))[0][0]
    answers = [api.get(f"{PRODUCTS}/{missing}", headers={"Connection": "close"}) for _ in range(6)]
    assert all(r.status_code == 404 for r in answers)
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers)
    assert str(missing) in answers[-1].json()["detail"]
    # Two processes: each asks the database at most once; the rest come from L1 or Redis.
    assert sum(queries(r) for r in answers) <= 1


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


def test_the_embedded_redis_has_a_memory_ceiling_with_lru_eviction(own_redis: EmbeddedRedis) -> None:
    client = redis_sync.Redis(unix_socket_path=str(own_redis.socket))
    try:
        assert int(client.config_get("maxmemory")["maxmemory"]) == 256 * 1024 * 1024
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    finally:
        client.close()


def _caches(url: str, *lock_ttls_ms: int) -> tuple[list[aioredis.Redis], list[PageCache]]:
    """One Redis client and page cache per simulated process, plus a spare client for the test."""
    clients = [aioredis.Redis.from_url(url) for _ in range(len(lock_ttls_ms) + 1)]
    caches = [
        PageCache(CacheConfig(key_prefix="sf-test:", lock_ttl_ms=ttl), client)
        for ttl, client in zip(lock_ttls_ms, clients, strict=False)
    ]
    return clients, caches


def test_a_slow_fill_is_made_once_across_processes(own_redis: EmbeddedRedis) -> None:
    """Three caches (three processes) miss one key while the fill takes 2.5 s, longer than the 2 s
    waiters used to give up after: the database is still asked once."""
    fills = 0

    async def fill() -> Made:
        nonlocal fills
        fills += 1
        await asyncio.sleep(2.5)
        return Made(b'{"ok":true}')

    async def main() -> list[bytes]:
        clients, caches = _caches(f"unix://{own_redis.socket}", 11_000, 11_000, 11_000)
        try:
            pages = await asyncio.gather(*(c.get_or_fill("k", lambda: "g1", fill) for c in caches))
            return [p.body for p in pages]
        finally:
            for c in clients:
                await c.aclose()

    bodies = run(main())
    assert bodies == [b'{"ok":true}'] * 3
    assert fills == 1


def test_a_late_owner_cannot_free_a_lock_it_lost(own_redis: EmbeddedRedis) -> None:
    """A's lock expires during its slow fill and B takes it over; A finishing must not free B's lock."""
    url = f"unix://{own_redis.socket}"
    lock_key = "sf-test:fill:g1|k"

    async def main() -> tuple[bytes | None, bytes | None]:
        # A's lock lives 0.3 s (its fill takes 0.8 s); B's lives long enough to outlast A.
        clients, caches = _caches(url, 300, 5000)
        a, b = caches
        seen: dict[str, bytes | None] = {}

        async def slow() -> Made:
            await asyncio.sleep(0.8)
            return Made(b"a")

        async def b_fill() -> Made:
            seen["b_holds"] = await clients[2].get(lock_key)
            await asyncio.sleep(0.6)  # still filling when A finishes
            seen["after_a"] = await clients[2].get(lock_key)
            return Made(b"b")

        try:
            task_a = asyncio.create_task(a.get_or_fill("k", lambda: "g1", slow))
            await asyncio.sleep(0.05)
            # B waits on A's lock, sees it expire (A still filling) and takes it over.
            await asyncio.gather(task_a, b.get_or_fill("k", lambda: "g1", b_fill))
            return seen.get("b_holds"), seen.get("after_a")
        finally:
            for c in clients:
                await c.aclose()

    b_token, after_a = run(main())
    assert b_token is not None, "B never took over the expired lock"
    assert after_a == b_token, "A's late unlock freed B's lock"
