"""Differential, generated: random catalogs, random writes committed through the real change feed, and
random list inputs. LiveCatalog (server/catalog/live.py) on each build of CatalogIndex and SearchIndex, built
from one snapshot and then caught up incrementally, must answer exactly what the SQL reference
(repo.list_products, repo.list_categories, repo.search_hits) answers: the same ids in the same order, the
same totals, the same category counts, the same search hits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from catalog_testlib import Database, run
from core_ext_testlib import Impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.catalog import repo
from server.catalog.live import LiveCatalog
from server.catalog.search import normalise

PRICE_LIST = "consumer"
NAMES = ("apple", "Apple", "banana", "cherry", "zeta", "äpfel", "تفاح", "Ä_50%", "أناناس")  # ties, collation
# Searches: substrings of the names (normalised or not, across Arabic letters the normalisation maps), LIKE's
# wildcards taken literally, and text in no name.
TERMS = ("app", "APP", "ppl", "äpf", "Äpf", "تفا", "فاح", "انا", "أنا", "ana", "a", "e", "_", "%", "_50%")
TERMS += ("xyz", "sku-", "ku-7", "قهو")
SKUS = (None, "SKU-7", "sku-70", "APP-1")  # the search text holds the SKU and the Arabic name too
NAMES_AR = (None, "قهوة", "تفاح")
PRICES = (None, 0, 100, 250, 250, 999, 1000)  # cents; repeats make ties
STOCKS = (-2, 0, 1, 7)
DAYS = (0, 1, 1, 3)  # equal timestamps make ties too

category_trees = st.lists(
    st.tuples(st.integers(0, 10), st.booleans()), min_size=1, max_size=6
)  # (parent pick, active): parent = an earlier category or none
products = st.tuples(
    st.sampled_from(NAMES),
    st.integers(0, 7),  # category pick (past the end: none)
    st.sampled_from(PRICES),
    st.sampled_from(STOCKS),
    st.sampled_from(DAYS),
    st.booleans(),
)
writes = st.one_of(
    st.tuples(st.just("stock"), st.integers(0, 40), st.sampled_from(STOCKS)),
    st.tuples(st.just("price"), st.integers(0, 40), st.sampled_from(PRICES)),
    st.tuples(st.just("name"), st.integers(0, 40), st.sampled_from(NAMES)),
    st.tuples(st.just("sku"), st.integers(0, 40), st.sampled_from(SKUS)),
    st.tuples(st.just("name_ar"), st.integers(0, 40), st.sampled_from(NAMES_AR)),
    st.tuples(st.just("active"), st.integers(0, 40), st.booleans()),
    st.tuples(st.just("category"), st.integers(0, 40), st.integers(0, 7)),
    st.tuples(st.just("delete"), st.integers(0, 40), st.none()),
    st.tuples(st.just("insert"), st.integers(0, 40), products),
    st.tuples(st.just("category_active"), st.integers(0, 10), st.booleans()),
)
queries = st.tuples(
    st.sampled_from(tuple(repo.SORTS)),
    st.integers(0, 7),  # category pick (7: none)
    st.sampled_from((None, 0, 100, 250, 260)),
    st.sampled_from((None, 250, 999, 5000)),
    st.sampled_from((None, True, False)),
    st.integers(1, 12),
    st.integers(0, 30),
)


async def reset(conn: asyncpg.Connection, tree: list[tuple[int, bool]], rows: list[Any]) -> None:
    await conn.execute("TRUNCATE products, product_prices, categories RESTART IDENTITY CASCADE")
    for k, (parent, active) in enumerate(tree):
        parent_id = parent % k + 1 if k and parent < 2 * k else None
        await conn.execute(
            "INSERT INTO categories (zoho_category_id, name, parent_id, is_active) VALUES ($1, $2, $3, $4)",
            f"c{k}",
            f"Category {k}",
            parent_id,
            active,
        )
    for row in rows:
        await insert(conn, len(tree), row)


async def insert(conn: asyncpg.Connection, n_categories: int, row: Any) -> None:
    name, cat, price, stock, day, active = row
    created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)
    pid = await conn.fetchval(
        "INSERT INTO products (zoho_item_id, name, category_id, stock_on_hand, created_at, is_active)"
        " VALUES ('z' || md5(random()::text),"
        " $1, $2, $3, $4, $5) RETURNING id",
        name,
        cat + 1 if cat < n_categories else None,
        stock,
        created,
        active,
    )
    await set_price(conn, pid, price)


async def set_price(conn: asyncpg.Connection, pid: int, price: int | None) -> None:
    if price is None:
        await conn.execute(
            "DELETE FROM product_prices WHERE product_id = $1"
            " AND price_list_id = (SELECT id FROM price_lists WHERE code = $2)",
            pid,
            PRICE_LIST,
        )
        return
    await conn.execute(
        "INSERT INTO product_prices (product_id, price_list_id, price)"
        " SELECT $1, id, $2 FROM price_lists WHERE code = $3"
        " ON CONFLICT (product_id, price_list_id) DO UPDATE SET price = excluded.price",
        pid,
        Decimal(price) / 100,
        PRICE_LIST,
    )


async def write(conn: asyncpg.Connection, n_categories: int, op: tuple[str, int, Any]) -> None:
    """One committed write (its own transaction, so its own version in the change feed)."""
    kind, pick, value = op
    ids = [r[0] for r in await conn.fetch("SELECT id FROM products ORDER BY id")]
    if kind == "insert":
        await insert(conn, n_categories, value)
        return
    if kind == "category_active":
        await conn.execute(
            "UPDATE categories SET is_active = $1 WHERE id = $2", value, pick % n_categories + 1
        )
        return
    if not ids:
        return
    pid = ids[pick % len(ids)]
    if kind == "stock":
        await conn.execute("UPDATE products SET stock_on_hand = $1 WHERE id = $2", value, pid)
    elif kind == "price":
        await set_price(conn, pid, value)
    elif kind == "name":
        await conn.execute("UPDATE products SET name = $1 WHERE id = $2", value, pid)
    elif kind in ("sku", "name_ar"):  # a column name from this file, never from input
        await conn.execute(f"UPDATE products SET {kind} = $1 WHERE id = $2", value, pid)
    elif kind == "active":
        await conn.execute("UPDATE products SET is_active = $1 WHERE id = $2", value, pid)
    elif kind == "category":
        cat = value + 1 if value < n_categories else None
        await conn.execute("UPDATE products SET category_id = $1 WHERE id = $2", cat, pid)
    elif kind == "delete":
        await conn.execute("DELETE FROM products WHERE id = $1", pid)


def dec(cents: int | None) -> Decimal | None:
    return None if cents is None else Decimal(cents) / 100


async def compare(
    impl: Impl, db: Database, tree: list[Any], rows: list[Any], ops: list[Any], cases: list[Any]
) -> None:
    conn = await asyncpg.connect(db.url)
    try:
        await reset(conn, tree, rows)
        live = LiveCatalog(PRICE_LIST, impl.CatalogIndex, make_search=impl.SearchIndex)
        await live.catch_up(conn)  # the first one builds from a snapshot
        for op in ops:
            await write(conn, len(tree), op)
        await live.catch_up(conn)  # every write since, incrementally
        assert live.rebuilds == 1, "writes of single rows must be applied, not rebuilt"
        for sort, cat, lo, hi, stock, limit, offset in cases:
            category = cat + 1 if cat < 7 else None
            flt = repo.ProductFilter(
                category_id=category, min_price=dec(lo), max_price=dec(hi), in_stock=stock, sort=sort
            )
            want_rows, want_total = await repo.list_products(
                conn, price_list=PRICE_LIST, flt=flt, limit=limit, offset=offset
            )
            got = live.index.query(
                sort, offset, limit, category=category, min_price=lo, max_price=hi, in_stock=stock
            )
            assert got == ([r[0] for r in want_rows], want_total), (flt, limit, offset)
        for term in TERMS:
            want_hits = sorted((await repo.search_hits(conn, term))[2])
            got_hits = live.search.search(normalise(term).encode())
            assert sorted(i for i in got_hits if live.is_listed(i)) == want_hits, term
        cats, total = await repo.list_categories(conn, parent_id=None, limit=200, offset=0)
        assert len(cats) == total
        counts = live.index.category_counts()
        assert {r["id"]: counts.get(r["id"], 0) for r in cats} == {r["id"]: r["product_count"] for r in cats}
        # The categories endpoint's pages from memory: rows, order, counts and totals, per parent.
        for parent in [None, *range(1, len(tree) + 2)]:
            for limit, offset in ((200, 0), (3, 0), (3, 3)):
                want, want_total = await repo.list_categories(
                    conn, parent_id=parent, limit=limit, offset=offset
                )
                page, got_total = live.category_page(parent, offset, limit)
                got = [(*row, count) for row, count in page]
                assert (got, got_total) == ([tuple(r)[:7] for r in want], want_total), (parent, limit, offset)
    finally:
        await conn.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    tree=category_trees,
    rows=st.lists(products, max_size=25),
    ops=st.lists(writes, max_size=12),
    cases=st.lists(queries, min_size=1, max_size=12),
)
def test_live_index_matches_sql_under_random_writes(
    impl: Impl, database: Database, tree: list[Any], rows: list[Any], ops: list[Any], cases: list[Any]
) -> None:
    run(compare(impl, database, tree, rows, ops, cases))
