"""CATALOG_INDEX=true against SQL: two real servers on one database, one serving the product list (searches
too) and the categories from the in-memory index (server/catalog/live.py), one from SQL, must answer byte
for byte the same, before and after random writes applied with plain SQL; and a stock update is applied
incrementally, not by a rebuild."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, run, timing

from server.catalog.search import normalise

PRODUCTS = "/api/consumer/products"
FACETS = ["category", "price", "in_stock"]
CATEGORIES = "/api/consumer/categories"
# Searches: words of the seed's names in English and Arabic, spelled as shoppers type them (case, tashkeel,
# tatweel, alef/hamza forms, taa marbuta as haa, Arabic-Indic digits in SKUs), SKUs, the separator of the
# search text's fields, LIKE's own wildcards, and terms that match nothing.
SEARCHES = [
    "juice", "JUICE", "fresh bread", "Bread 500", "sku", "SKU-000", "sku-0000012", "SKU-٠٠٠٠٠١٢",
    "۰۰۰۰۱", "عصير", "عَصِير", "عصـــير", "قهوة", "قهوه", "أرز", "ارز", "إرز", "آرز", "خبز طازج", "ألبان",
    "100%", "sku_000", "pro", "zzzz", "Renamed", "Brand new", "same name",
]  # fmt: skip
# One process each, so /ready describes the process that answers; no shared page cache, so every answer is
# computed by the path under test; one public URL, so image URLs do not differ by port.
COMMON = {"PROCESSES": "1", "CACHE_ENABLED": "false", "PUBLIC_BASE_URL": "http://catalog.test"}


@pytest.fixture(scope="module")
def servers(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """(CATALOG_INDEX=true server, CATALOG_INDEX=false server) on the module's database."""
    awkward(database)
    indexed = ServerProcess(
        database, services, tmp_path_factory.mktemp("idx"), CATALOG_INDEX="true", **COMMON
    )
    plain = ServerProcess(database, services, tmp_path_factory.mktemp("sql"), CATALOG_INDEX="false", **COMMON)
    indexed.start()
    try:
        plain.start()
        try:
            yield indexed, plain
        finally:
            plain.stop()
    finally:
        indexed.stop()


def awkward(db: Database) -> None:
    """Ties the index must break exactly as SQL does: equal names, prices, timestamps; missing prices;
    categories that are inactive (a parent with active children too), share a sort_order and name, and
    have names whose order depends on the collation (ICU's where the server has it: not code points)."""
    if run(db.fetch("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'")):
        run(db.execute('ALTER TABLE categories ALTER COLUMN name TYPE text COLLATE "und-x-icu"'))
    for sql in (
        "UPDATE categories SET sort_order = 0 WHERE id % 3 = 0",
        "UPDATE categories SET name = 'apple' WHERE id % 5 = 0",
        "UPDATE categories SET name = 'Banana' WHERE id % 5 = 1",
        "UPDATE categories SET name = 'éclair' WHERE id % 5 = 2",
        "UPDATE categories SET is_active = false WHERE id % 7 = 1",
        "UPDATE products SET name = 'Same name' WHERE id % 7 = 0",
        "UPDATE products SET created_at = '2024-01-01T00:00:00Z' WHERE id % 6 = 0",
        "UPDATE products SET is_active = false WHERE id % 13 = 0",
        "UPDATE products SET stock_on_hand = 0 WHERE id % 4 = 0",
        "UPDATE product_prices SET price = 10.00 WHERE product_id % 5 = 0",
        "DELETE FROM product_prices WHERE product_id % 11 = 0"
        " AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')",
    ):
        run(db.execute(sql))


def ready(server: ServerProcess) -> dict[str, Any]:
    resp = httpx.get(server.base_url + "/ready", timeout=5)
    assert resp.status_code == 200, resp.text
    catalog: dict[str, Any] = resp.json()["catalog"]
    return catalog


def wait_caught_up(servers: tuple[ServerProcess, ServerProcess], version: int, timeout: float = 15) -> None:
    """Until both servers saw `version` and the index reflects it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a, b = ready(servers[0]), ready(servers[1])
        if a["version"] >= version and b["version"] >= version and a["index"]["version"] == a["version"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"not caught up to {version}: {a} {b}")


def current_version(db: Database) -> int:
    return int(run(db.fetch("SELECT version FROM catalog_state"))[0][0])


def random_queries(db: Database, rng: random.Random, n: int) -> list[dict[str, Any]]:
    cats = [r[0] for r in run(db.fetch("SELECT id FROM categories ORDER BY id"))]
    active = int(run(db.fetch("SELECT count(*) FROM products WHERE is_active"))[0][0])
    out = []
    for _ in range(n):
        size = rng.choice([1, 7, 20, 50, 200])
        last = max(1, -(-active // size))
        params: dict[str, Any] = {
            "sort": rng.choice(["name", "-name", "price", "-price", "newest"]),
            "page_size": size,
            "page": rng.choice([1, 2, last, last + 1, rng.randint(1, last)]),
        }
        if rng.random() < 0.4:
            params["category_id"] = rng.choice([*cats, 10**6])
        if rng.random() < 0.3:
            params["min_price"] = rng.choice(["0", "5", "10", "10.00", "12.34", "50.5"])
        if rng.random() < 0.3:
            params["max_price"] = rng.choice(["10", "20.99", "60", "1000", "0.01"])
        if rng.random() < 0.3:
            params["in_stock"] = rng.choice(["true", "false"])
        if rng.random() < 0.3:
            params["facets"] = ",".join(rng.sample(FACETS, rng.randint(1, len(FACETS))))
        if rng.random() < 0.3:
            params["q"] = rng.choice(SEARCHES)
        out.append(params)
    return out


def random_batches(db: Database, rng: random.Random, n: int) -> list[dict[str, Any]]:
    """`ids=` batches: active, inactive and unknown ids, SKUs in other spellings, duplicates."""
    rows = run(db.fetch("SELECT id, sku FROM products ORDER BY id"))
    out = []
    for _ in range(n):
        entries = []
        for row in rng.sample(rows, rng.randint(1, 30)):
            sku = row["sku"] or "no-sku"
            entries.append(
                rng.choice([str(row["id"]), sku, sku.lower(), f"sku:{sku}", str(row["id"] + 10**6)])
            )
        entries += rng.sample(entries, min(3, len(entries)))  # duplicates
        out.append({"ids": ",".join(entries)})
    return out


def index_served(queries: list[dict[str, Any]]) -> int:
    """How many of these the index answers (batches are SQL on both servers)."""
    return sum("ids" not in p for p in queries)


def random_category_queries(db: Database, rng: random.Random, n: int) -> list[dict[str, Any]]:
    parents = [r[0] for r in run(db.fetch("SELECT DISTINCT parent_id FROM categories WHERE parent_id > 0"))]
    cats = [r[0] for r in run(db.fetch("SELECT id FROM categories ORDER BY id"))]
    out = []
    for _ in range(n):
        size = rng.choice([1, 3, 7, 50, 200])
        params: dict[str, Any] = {"page_size": size, "page": rng.choice([1, 1, 2, 3, 9, 60])}
        if rng.random() < 0.5:
            params["parent_id"] = rng.choice([*parents, *parents, rng.choice(cats), 10**6])
        out.append(params)
    return out


def compare(
    servers: tuple[ServerProcess, ServerProcess], queries: list[dict[str, Any]], path: str = PRODUCTS
) -> int:
    """Assert both servers answer every query with the same bytes; return how many were non-empty."""
    non_empty = 0
    with servers[0].client() as a, servers[1].client() as b:
        for params in queries:
            ra, rb = a.get(path, params=params), b.get(path, params=params)
            assert ra.status_code == rb.status_code == 200, (params, ra.text, rb.text)
            assert ra.content == rb.content, params
            non_empty += b'"items":[]' not in ra.content
    return non_empty


def answers(server: ServerProcess, queries: list[dict[str, Any]]) -> list[bytes]:
    with server.client() as api:
        return [api.get(PRODUCTS, params=params).content for params in queries]


def test_index_answers_like_sql(servers: tuple[ServerProcess, ServerProcess], database: Database) -> None:
    wait_caught_up(servers, current_version(database))
    rng = random.Random(10)
    queries = random_queries(database, rng, 200) + random_batches(database, rng, 20)
    served = ready(servers[0])["index"]["served"]
    assert compare(servers, queries) > 50
    # The index really answered every one of them (no write meanwhile, so never a fallback to SQL); the
    # default server has none.
    assert ready(servers[0])["index"]["served"] == served + index_served(queries)
    assert "index" not in ready(servers[1])
    bodies = answers(servers[0], queries)
    assert sum(b'"facets":{"category":[{' in body for body in bodies) > 20
    assert sum(b'"missing":[' in body for body in bodies) == 20


def test_searches_answer_like_sql(servers: tuple[ServerProcess, ServerProcess], database: Database) -> None:
    wait_caught_up(servers, current_version(database))
    queries = [
        {"q": q, "sort": sort, "page_size": size, "page": page}
        for q in SEARCHES
        for sort, size, page in (("name", 50, 1), ("-price", 7, 2), ("newest", 200, 1))
    ]
    queries += [{"q": "sku", "category_id": c, "in_stock": "true"} for c in (1, 2, 7)]
    before = ready(servers[0])["index"]
    assert compare(servers, queries) > len(queries) // 2
    after = ready(servers[0])["index"]
    assert after["served"] == before["served"] + len(queries)
    # One scan of the search texts per distinct search in this version; the other pages and sorts came from
    # the memo, and spellings of one query (one key) from the answers remembered by the index (no look-up).
    memo, old = after["search_memo"], before["search_memo"]
    terms = {normalise(q).strip() for q in SEARCHES}
    keys = {(normalise(p["q"]).strip(), *(str(v) for k, v in sorted(p.items()) if k != "q")) for p in queries}
    assert memo["misses"] - old["misses"] <= len(terms)
    assert (memo["hits"] + memo["misses"]) - (old["hits"] + old["misses"]) <= len(keys)


def test_searches_run_no_query(servers: tuple[ServerProcess, ServerProcess], database: Database) -> None:
    # Searches never asked before (so not in the memo), past their last page (so no row is fetched either):
    # the index path finds, counts and pages them in memory, with the totals SQL gives.
    wait_caught_up(servers, current_version(database))
    queries = [{"q": q, "page": 1000, "page_size": 200} for q in ("uic", "ُعصي", "SKU-00001", "read 5")]
    with servers[0].client() as api:
        for params in queries:
            resp = api.get(PRODUCTS, params=params)
            assert resp.status_code == 200
            assert timing(resp)[0] == 0, params
            assert resp.json()["total"] > 0, params
    assert compare(servers, queries) == 0


def test_categories_answer_like_sql(servers: tuple[ServerProcess, ServerProcess], database: Database) -> None:
    wait_caught_up(servers, current_version(database))
    rng = random.Random(12)
    queries = [{}, {"page_size": 200}, *random_category_queries(database, rng, 60)]
    served = ready(servers[0])["index"]["served"]
    assert compare(servers, queries, CATEGORIES) > 20
    assert ready(servers[0])["index"]["served"] == served + len(queries)


WRITES = [
    "UPDATE products SET stock_on_hand = {n} WHERE id = {id}",
    "UPDATE product_prices SET price = {price} WHERE product_id = {id}",
    "DELETE FROM product_prices WHERE product_id = {id}",
    "UPDATE products SET is_active = NOT is_active WHERE id = {id}",
    "UPDATE products SET name = 'Renamed {n}' WHERE id = {id}",
    "UPDATE products SET name = 'Same name' WHERE id = {id}",
    "UPDATE products SET category_id = {cat} WHERE id = {id}",
    "UPDATE categories SET parent_id = NULL WHERE id = {cat}",
    "UPDATE categories SET parent_id = {cat2} WHERE id = {cat} AND id <> {cat2}",
    "UPDATE products SET created_at = '2024-01-01T00:00:00Z' WHERE id = {id}",
    "INSERT INTO products (zoho_item_id, sku, name, category_id, stock_on_hand)"
    " VALUES ('new-{n}', 'SKU-NEW-{n}', 'Brand new {n}', {cat}, {n} % 3)",
    "INSERT INTO product_prices (product_id, price_list_id, price)"
    " SELECT max(id), (SELECT id FROM price_lists WHERE code = 'consumer'), {price} FROM products"
    " ON CONFLICT DO NOTHING",
    "DELETE FROM products WHERE id = (SELECT max(id) FROM products WHERE zoho_item_id LIKE 'new-%')",
    "UPDATE categories SET name = '{word}' WHERE id = {cat}",
    "UPDATE categories SET is_active = NOT is_active WHERE id = {cat}",
    "UPDATE categories SET sort_order = {n} % 3 WHERE id = {cat}",
    "INSERT INTO categories (zoho_category_id, name, name_ar, parent_id, sort_order)"
    " VALUES ('newcat-{n}', '{word}', 'جديد', {cat}, {n} % 2)",
    "UPDATE products SET category_id = (SELECT max(id) FROM categories) WHERE id = {id}",
    "DELETE FROM categories"
    " WHERE id = (SELECT max(id) FROM categories WHERE zoho_category_id LIKE 'newcat-%')",
    "UPDATE products SET name = 'Fresh قهوة {n}' WHERE id = {id}",
    # Many new names at once: equal to existing ones, to each other, or just after them (placed ranks).
    "INSERT INTO products (zoho_item_id, sku, name, category_id, stock_on_hand)"
    " SELECT 'many-{n}-' || g, NULL,"
    " (SELECT name FROM products ORDER BY id OFFSET ({n} + g * 7) % 50 LIMIT 1)"
    " || CASE WHEN g % 3 = 0 THEN '' ELSE ' ' || (g % 2) END, {cat}, g % 3 FROM generate_series(1, 30) g",
]
CATEGORY_NAMES = ["apple", "Apple", "Banana", "banana", "éclair", "Eclair", "zebra", "Zebra", "ألبان"]


def test_index_follows_random_writes(
    servers: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    rng = random.Random(11)
    before = ready(servers[0])["index"]
    for step in range(40):
        ids = [r[0] for r in run(database.fetch("SELECT id FROM products ORDER BY id"))]
        cats = [r[0] for r in run(database.fetch("SELECT id FROM categories ORDER BY id"))]
        sql = WRITES[step % len(WRITES)] if step < len(WRITES) else rng.choice(WRITES)
        values = {
            "id": rng.choice(ids),
            "n": step * 1000 + rng.randint(0, 999),
            "price": f"{rng.randint(0, 9999) / 100:.2f}",
            "cat": rng.choice(cats),
            "cat2": rng.choice(cats),
            "word": rng.choice(CATEGORY_NAMES),
        }
        try:
            run(database.execute(sql.format(**values)))
        except Exception as exc:  # a category cycle or the like: the database refused; nothing changed
            if "violates" not in str(exc) and "cycle" not in str(exc):
                raise
        wait_caught_up(servers, current_version(database))
        served = ready(servers[0])["index"]["served"]
        queries = [{"q": "sku", "sort": "-price"}, *random_queries(database, rng, 12)]
        queries += random_batches(database, rng, 2)
        assert compare(servers, queries) > 0, sql
        categories = random_category_queries(database, rng, 6)
        assert compare(servers, [{"page_size": 200}, *categories], CATEGORIES) > 0, sql
        assert ready(servers[0])["index"]["served"] == served + index_served(queries) + 1 + len(categories)
    # Ordinary writes never rebuilt the index; renames and new products were placed between their neighbours'
    # name ranks (no reload), tree moves reloaded the categories.
    after = ready(servers[0])["index"]
    assert after["rebuilds"] == before["rebuilds"]
    assert after["applied"] >= before["applied"] + 40
    assert after["rank_places"] > before["rank_places"]
    assert after["category_loads"] > before["category_loads"]


def test_stock_update_is_incremental(
    servers: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    before = ready(servers[0])["index"]
    product = run(database.fetch("SELECT id FROM products WHERE is_active ORDER BY id LIMIT 1"))[0][0]
    for n in range(20):
        run(database.execute("UPDATE products SET stock_on_hand = $1 WHERE id = $2", n % 3, product))
    wait_caught_up(servers, current_version(database))
    after = ready(servers[0])["index"]
    assert after["rebuilds"] == before["rebuilds"]
    assert after["applied"] >= before["applied"] + 20
    assert after["rank_loads"] == before["rank_loads"]
    compare(servers, [{"in_stock": "true", "page_size": 200}, {"in_stock": "false", "sort": "-price"}])


def test_answers_never_go_back_during_a_burst(
    servers: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    # Writes this close together are a burst: a process may answer from the index as of the version it has
    # applied while it catches up (CATALOG_INDEX_STALE_MS), never from one older than an answer it gave
    # (unless a wait for a catch-up ran out and SQL, newer than the index, answered in between).
    product = run(database.fetch("SELECT id FROM products WHERE is_active ORDER BY id LIMIT 1"))[0][0]
    to_sql = ready(servers[0])["index"]["waits_to_sql"]
    seen = []
    with servers[0].client() as api:
        for n in range(1, 31):
            run(database.execute("UPDATE products SET stock_on_hand = $1 WHERE id = $2", 1000 + n, product))
            resp = api.get(f"{PRODUCTS}/{product}")
            assert resp.status_code == 200, resp.text
            seen.append(resp.json()["stock"])
        if ready(servers[0])["index"]["waits_to_sql"] == to_sql:
            assert seen == sorted(seen), seen
        assert all(1000 < s <= 1030 for s in seen), seen
        wait_caught_up(servers, current_version(database))
        assert api.get(f"{PRODUCTS}/{product}").json()["stock"] == 1030
    index = ready(servers[0])["index"]
    assert index["served_behind"] >= 0 and index["waits"] >= index["waits_to_sql"] >= 0


def test_bulk_changes_are_answered_behind_without_waiting(
    servers: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    # A writer that marks its session bulk (the Zoho sync: nobody reads right after its batches) makes no
    # request wait for the catch-up: each read is answered from the index as of the version it has applied
    # (within CATALOG_INDEX_STALE_MS), never older than an answer before it, and the last write arrives.
    product = run(database.fetch("SELECT id FROM products WHERE is_active ORDER BY id LIMIT 1"))[0][0]
    run(database.execute("UPDATE products SET stock_on_hand = 0 WHERE id = $1", product))
    wait_caught_up(servers, current_version(database))
    first = 0
    before = ready(servers[0])["index"]
    seen = []

    loop = asyncio.new_event_loop()  # one loop: the writer's connection lives across the reads
    conn = loop.run_until_complete(asyncpg.connect(database.url))
    try:
        loop.run_until_complete(conn.execute("SET catalog.bulk = 'on'"))
        with servers[0].client() as api:
            for n in range(1, 31):
                sql = "UPDATE products SET stock_on_hand = $1 WHERE id = $2"
                loop.run_until_complete(conn.execute(sql, 2000 + n, product))
                resp = api.get(f"{PRODUCTS}/{product}")
                assert resp.status_code == 200, resp.text
                seen.append(resp.json()["stock"])
            # The first reads may come before the first write is applied: the stock before it.
            assert seen == sorted(seen) and all(s == first or 2000 < s <= 2030 for s in seen), seen
            wait_caught_up(servers, current_version(database))
            assert api.get(f"{PRODUCTS}/{product}").json()["stock"] == 2030
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
    after = ready(servers[0])["index"]
    # Plain writes this close together make the first read after each catch-up wait (the burst test);
    # bulk ones at most when a catch-up outlasts CATALOG_INDEX_STALE_MS (1 s).
    assert after["waits"] - before["waits"] <= 2, (before, after)
    assert after["served_behind"] > before["served_behind"], (before, after)


def test_price_list_change_rebuilds(servers: tuple[ServerProcess, ServerProcess], database: Database) -> None:
    before = ready(servers[0])["index"]
    run(database.execute("UPDATE price_lists SET currency = 'USD' WHERE code = 'consumer'"))
    wait_caught_up(servers, current_version(database))
    assert ready(servers[0])["index"]["rebuilds"] == before["rebuilds"] + 1
    assert compare(servers, [{"sort": "price"}, {"sort": "-price", "max_price": "30"}]) == 2


def test_a_list_no_one_sees_does_not_rebuild(
    servers: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    # A sync creating the list of a new Zoho price book (not shown to shoppers): nothing the index shows.
    before = ready(servers[0])["index"]
    run(
        database.execute(
            "INSERT INTO price_lists (code, name, currency, consumer_visible, sort_order)"
            " VALUES ('book_hidden', 'Hidden book', 'SAR', false, 99)"
        )
    )
    run(database.execute("UPDATE price_lists SET name = 'Hidden book 2' WHERE code = 'book_hidden'"))
    wait_caught_up(servers, current_version(database))
    assert ready(servers[0])["index"]["rebuilds"] == before["rebuilds"]
    # Shown to shoppers, it is in every detail: rebuilt.
    run(database.execute("UPDATE price_lists SET consumer_visible = true WHERE code = 'book_hidden'"))
    wait_caught_up(servers, current_version(database))
    assert ready(servers[0])["index"]["rebuilds"] == before["rebuilds"] + 1
    assert compare(servers, [{"sort": "price"}, {"sort": "-price", "max_price": "30"}]) == 2


def test_catches_up_after_listen_reconnect(
    servers: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    before = ready(servers[0])
    product = run(database.fetch("SELECT id FROM products WHERE is_active ORDER BY id DESC LIMIT 1"))[0][0]
    run(
        database.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'catalog-listen' AND datname = current_database()"
        )
    )
    # Written while the listeners may be away: only the catch-up after the reconnect can see it.
    run(database.execute("UPDATE products SET stock_on_hand = 0 WHERE id = $1", product))
    wait_caught_up(servers, current_version(database))
    after = ready(servers[0])
    assert after["reconnects"] > before["reconnects"]
    assert after["index"]["rebuilds"] == before["index"]["rebuilds"]
    assert compare(servers, [{"in_stock": "false", "page_size": 200}, {"sort": "newest"}]) == 2
