"""Caching that is never stale: invalidation by the database, across processes, with Redis or without."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from catalog_testlib import (
    Database,
    ServerProcess,
    Services,
    drop_database,
    make_database,
    run,
    timing,
)

from server.embedded import EmbeddedRedis

PRODUCTS = "/api/consumer/products"
CLOSE = {"Connection": "close"}


def pids_of(server: ServerProcess) -> set[int]:
    """The pids of the server's Robyn processes (from /ready over many fresh connections: the kernel
    spreads connections, not requests, over the processes)."""
    with server.client() as client:
        return {client.get("/ready", headers=CLOSE).json()["pid"] for _ in range(40)}


def wait_until_every_process_serves(
    server: ServerProcess, url: str, check: object, timeout: float = 1.0
) -> float:
    """Poll until each process has answered with `check(json) is True`; return the seconds it took."""
    started = time.monotonic()
    pids = pids_of(server)
    seen: set[int] = set()
    with server.client() as client:
        while time.monotonic() - started < timeout * 3:
            resp = client.get(url, headers=CLOSE)
            _, pid = timing(resp)
            if check(resp.json()):  # type: ignore[operator]
                seen.add(pid)
                if seen >= pids:
                    return time.monotonic() - started
            else:
                assert pid not in seen, "a process went back to old data"
    raise AssertionError(f"only {seen} of {pids} served the change")


def test_pages_are_cached(api: httpx.Client) -> None:
    url = f"{PRODUCTS}?page_size=37&sort=-price"
    first = [api.get(url) for _ in range(12)]
    assert len({r.headers["etag"] for r in first}) == 1
    assert sum(timing(r)[0] for r in first) <= 2  # one fill per process at most (L2 shares it)
    ready = api.get("/ready").json()["cache"]
    assert ready["l1_hits"] >= 1 and ready["fills"] >= 1


def test_price_change_by_plain_sql_reaches_every_process_within_1s(
    server: ServerProcess, database: Database
) -> None:
    with server.client() as client:
        item = client.get(f"{PRODUCTS}/7").json()
        for _ in range(10):
            client.get(f"{PRODUCTS}/7")  # warm every process's L1
    new_price = (Decimal(item["price"]) + Decimal("1.11")).quantize(Decimal("0.01"))
    run(
        database.execute(
            "UPDATE product_prices SET price = $1 WHERE product_id = 7 "
            "AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')",
            new_price,
        )
    )
    took = wait_until_every_process_serves(server, f"{PRODUCTS}/7", lambda d: d["price"] == str(new_price))
    assert took < 1.0
    with server.client() as client:
        listed = client.get(PRODUCTS, params={"q": item["sku"]}).json()["items"][0]
    assert listed["price"] == str(new_price)


def test_change_while_listen_connection_is_cut_is_seen_after_reconnect(
    server: ServerProcess, database: Database
) -> None:
    with server.client() as client:
        before = client.get(f"{PRODUCTS}/9").json()
        reconnects = client.get("/ready").json()["catalog"]["reconnects"]
    # Cut every LISTEN connection, then commit while they are down.
    run(
        database.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'catalog-listen' AND datname = current_database()"
        )
    )
    run(database.execute("UPDATE products SET name = name || ' (renamed)' WHERE id = 9"))
    took = wait_until_every_process_serves(
        server, f"{PRODUCTS}/9", lambda d: d["name"] == before["name"] + " (renamed)", timeout=2.0
    )
    assert took < 2.0
    with server.client() as client:
        assert client.get("/ready").json()["catalog"]["reconnects"] >= reconnects


def test_image_file_changes_has_image_and_etag(server: ServerProcess, database: Database) -> None:
    with server.client() as client:
        items = client.get(PRODUCTS, params={"page_size": 200}).json()["items"]
        item = next(i for i in items if not i["has_image"])
        url = f"{PRODUCTS}/{item['id']}"
        old_etag = client.get(url).headers["etag"]
        source = next(p for p in database.uploads.glob("*.jpg") if not p.is_symlink())
        target = database.uploads / f"{item['zoho_item_id']}.jpg"
        shutil.copyfile(source, target)
        try:
            wait_until_every_process_serves(server, url, lambda d: d["has_image"] is True, timeout=2.0)
            resp = client.get(url, headers={"If-None-Match": old_etag})
            assert resp.status_code == 200 and resp.headers["etag"] != old_etag
        finally:
            target.unlink()


def test_conditional_requests_on_cached_pages(api: httpx.Client) -> None:
    # One coding throughout: each representation has its own ETag (test_encodings.py), and httpx's default
    # Accept-Encoding depends on the packages installed.
    gzip = {"Accept-Encoding": "gzip"}
    first = api.get(PRODUCTS, params={"page": 2}, headers=gzip)
    etag = first.headers["etag"]
    assert api.get(PRODUCTS, params={"page": 2}, headers={**gzip, "If-None-Match": etag}).status_code == 304
    assert api.get(PRODUCTS, params={"page": 2}, headers={**gzip, "If-None-Match": "*"}).status_code == 304
    resp = api.get(PRODUCTS, params={"page": 2}, headers={**gzip, "If-None-Match": '"a", "b"'})
    assert resp.status_code == 200 and resp.headers["etag"] == etag
    assert "stale-while-revalidate" in first.headers["cache-control"]


def settle(server: ServerProcess, quiet_s: float = 0.6) -> None:
    """Wait until every process reports one cache generation that stays put (earlier tests change
    files and rows; their effects arrive within the refresh interval)."""
    last, since = None, time.monotonic()
    deadline = since + 5
    while time.monotonic() < deadline:
        with server.client() as client:
            gens = {client.get("/ready", headers=CLOSE).json()["catalog"]["generation"] for _ in range(8)}
        if len(gens) == 1 and gens == last:
            if time.monotonic() - since >= quiet_s:
                return
        else:
            last, since = gens, time.monotonic()
        time.sleep(0.1)
    raise AssertionError("cache generation did not settle")


def _indexed(api: httpx.Client) -> bool:
    """Whether the server answers from the in-memory catalog index (CATALOG_INDEX)."""
    return "index" in api.get("/ready").json()["catalog"]


def test_thundering_herd_costs_one_query(api: httpx.Client, server: ServerProcess) -> None:
    settle(server)
    url = f"{server.base_url}{PRODUCTS}?page_size=113&sort=newest&in_stock=true"
    with httpx.Client(limits=httpx.Limits(max_connections=200)) as client, ThreadPoolExecutor(64) as pool:
        responses = list(pool.map(lambda _: client.get(url), range(200)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.headers["etag"] for r in responses}) == 1
    by_process: dict[int, int] = {}
    for r in responses:
        queries, pid = timing(r)
        by_process[pid] = by_process.get(pid, 0) + queries
    if _indexed(api):
        # An answer from the index is made once per process (the rows the row store lacks, by primary key)
        # and kept in that process's L1: a herd costs at most one query in each.
        assert all(q <= 1 for q in by_process.values()), by_process
    else:
        assert sum(by_process.values()) == 1  # made once across processes (the L2 fill lock)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own, to stop and start."""
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


def test_redis_loss_degrades_and_recovers(
    services: Services, template_db: tuple[str, Path], tmp_path: Path, own_redis: EmbeddedRedis
) -> None:
    db = make_database(services, template_db, tmp_path)
    # The SQL path: its pages go through Redis (L2), so losing Redis shows on the page cache (answers from
    # the index stay in L1; the rate limiter then notices a lost Redis).
    srv = ServerProcess(
        db, services, tmp_path, REDIS_URL=f"unix://{own_redis.socket}", CATALOG_INDEX="false"
    ).start()
    try:
        with srv.client() as client:
            assert client.get("/ready").json()["cache"]["degraded"] is False
            own_redis.stop()
            statuses = [client.get(PRODUCTS, params={"page": n % 5 + 1}).status_code for n in range(60)]
            assert statuses == [200] * 60
            ready = client.get("/ready")
            assert ready.status_code == 200  # the database is what readiness needs
            states = {client.get("/ready").json()["cache"]["degraded"] for _ in range(10)}
            assert True in states
            run(db.execute("UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id = 11"))
            stock = run(db.fetch("SELECT stock_on_hand FROM products WHERE id = 11"))[0][0]
            wait_until_every_process_serves(srv, f"{PRODUCTS}/11", lambda d: d["stock"] == stock)
            own_redis.start()
            deadline = time.monotonic() + 5
            page = 7
            while time.monotonic() < deadline:
                for _ in range(10):
                    page += 1  # new keys: L1 misses go to Redis again
                    assert client.get(PRODUCTS, params={"page": page, "page_size": 1}).status_code == 200
                if not any(client.get("/ready").json()["cache"]["degraded"] for _ in range(6)):
                    break
                time.sleep(0.2)
            else:
                pytest.fail("cache stayed degraded after Redis came back")
        assert srv.log().count("Redis unavailable") <= 2  # logged once per process, not per request
    finally:
        srv.stop()
        drop_database(db)


def test_renamed_zoho_id_reloads_the_image_map(server: ServerProcess, database: Database) -> None:
    """A product whose zoho_item_id changes to a name that has a file gets its image (the map reloads);
    a stock change alone does not reload the map."""
    with server.client() as client:
        items = client.get(PRODUCTS, params={"page_size": 200}).json()["items"]
        without = next(i for i in items if not i["has_image"])
        loads = {client.get("/ready", headers=CLOSE).json()["catalog"]["map_loads"] for _ in range(6)}
    run(
        database.execute("UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id = $1", without["id"])
    )
    source = next(p for p in database.uploads.glob("*.jpg") if not p.is_symlink())
    new_id = f"renamed-{without['id']}"
    (database.uploads / f"{new_id}.jpg").write_bytes(source.read_bytes())
    time.sleep(0.5)  # the folder change alone: the old zoho_item_id still has no file
    with server.client() as client:
        assert client.get(f"{PRODUCTS}/{without['id']}").json()["has_image"] is False
        after_stock = {client.get("/ready", headers=CLOSE).json()["catalog"]["map_loads"] for _ in range(6)}
    assert max(after_stock) == max(loads)  # no reload for a stock change
    run(database.execute("UPDATE products SET zoho_item_id = $1 WHERE id = $2", new_id, without["id"]))
    wait_until_every_process_serves(
        server,
        f"{PRODUCTS}/{without['id']}",
        lambda d: d["has_image"] is True and d["zoho_item_id"] == new_id,
    )
