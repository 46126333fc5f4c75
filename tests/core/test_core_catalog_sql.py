"""CatalogIndex against the real SQL: on a seeded PostgreSQL catalog made awkward on purpose (equal names,
equal and missing prices, equal timestamps, inactive products, a deep tree with inactive categories), every
filter, sort and page the index answers is exactly what server/catalog/repo.py answers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from catalog_testlib import Database, run
from core_ext_testlib import Impl

from server.catalog import repo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRICE_LIST = "consumer"

AWKWARD = [
    "UPDATE products SET name = 'Same name' WHERE id % 7 = 0",
    "UPDATE products SET created_at = '2024-01-01T00:00:00Z' WHERE id % 6 = 0",
    "UPDATE products SET is_active = false WHERE id % 13 = 0",
    "UPDATE products SET category_id = NULL WHERE id % 17 = 0",
    "UPDATE product_prices SET price = 10.00 WHERE product_id % 5 = 0",
    "DELETE FROM product_prices WHERE product_id % 11 = 0"
    " AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')",
    # A chain under the first sub-category: child (inactive) -> grandchild (active), products moved in.
    "INSERT INTO categories (zoho_category_id, name, parent_id, is_active)"
    " SELECT 'deep-1', 'Deep 1', id, false FROM categories WHERE parent_id IS NOT NULL ORDER BY id LIMIT 1",
    "INSERT INTO categories (zoho_category_id, name, parent_id) SELECT 'deep-2', 'Deep 2', id"
    " FROM categories WHERE zoho_category_id = 'deep-1'",
    "UPDATE products SET category_id = (SELECT id FROM categories WHERE zoho_category_id = 'deep-1')"
    " WHERE id % 9 = 1",
    "UPDATE products SET category_id = (SELECT id FROM categories WHERE zoho_category_id = 'deep-2')"
    " WHERE id % 9 = 2",
    # An inactive root and an inactive leaf elsewhere.
    "UPDATE categories SET is_active = false"
    " WHERE id = (SELECT max(id) FROM categories WHERE parent_id IS NULL)",
    "UPDATE categories SET is_active = false WHERE id = (SELECT max(id) FROM categories WHERE parent_id = 1)",
]

PRODUCTS_SQL = """
SELECT p.id, p.category_id, (pp.price * 100)::bigint, p.stock_on_hand, p.created_at,
       dense_rank() OVER (ORDER BY p.name), p.is_active
FROM products p
LEFT JOIN product_prices pp
       ON pp.product_id = p.id AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = $1)
ORDER BY p.id
"""


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


@pytest.fixture(scope="module")
def awkward(database: Database) -> Database:
    """The module's database with the awkward cases above."""
    for sql in AWKWARD:
        run(database.execute(sql))
    return database


def load(index: Any, db: Database) -> None:
    cats = run(db.fetch("SELECT id, parent_id, is_active FROM categories ORDER BY id"))
    index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
    rows = run(db.fetch(PRODUCTS_SQL, PRICE_LIST))
    cols = list(zip(*rows, strict=True))
    index.build(cols[0], cols[1], cols[2], cols[3], [micros(t) for t in cols[4]], cols[5], cols[6])


Case = tuple[repo.ProductFilter, int, int]  # filter, limit, offset


async def sql_pages(db: Database, cases: list[Case]) -> list[tuple[list[int], int]]:
    conn = await asyncpg.connect(db.url)
    try:
        out = []
        for flt, limit, offset in cases:
            rows, total = await repo.list_products(
                conn, price_list=PRICE_LIST, flt=flt, limit=limit, offset=offset
            )
            out.append(([r[0] for r in rows], total))
        return out
    finally:
        await conn.close()


def cents(d: Decimal | None) -> int | None:
    return None if d is None else int(d * 100)


def test_every_filter_sort_and_page_matches_sql(impl: Impl, awkward: Database) -> None:
    index = impl.CatalogIndex()
    load(index, awkward)
    cats = run(awkward.fetch("SELECT id FROM categories ORDER BY id"))
    category_ids = [None, 1, cats[3][0], *(r[0] for r in cats[-4:]), 10**6]
    prices = [(None, None), (Decimal("10.00"), None), (None, Decimal("10.00")), (Decimal("5.5"), Decimal(60))]
    cases = []
    stocks = (None, True, False)
    for cat, (lo, hi), stock, sort in itertools.product(category_ids, prices, stocks, repo.SORTS):
        for limit, offset in ((50, 0), (7, 3), (10, 40), (5, 280)):
            flt = repo.ProductFilter(category_id=cat, min_price=lo, max_price=hi, in_stock=stock, sort=sort)
            cases.append((flt, limit, offset))
    expected = run(sql_pages(awkward, cases))
    assert any(total for _, total in expected) and any(not total for _, total in expected)
    for (flt, limit, offset), want in zip(cases, expected, strict=True):
        got = index.query(
            flt.sort,
            offset,
            limit,
            category=flt.category_id,
            min_price=cents(flt.min_price),
            max_price=cents(flt.max_price),
            in_stock=flt.in_stock,
        )
        assert got == want, flt


def test_search_hits_as_only_match_sql(impl: Impl, awkward: Database) -> None:
    index = impl.CatalogIndex()
    load(index, awkward)
    cases = []
    for q in ("same", "a", "zz-no-such"):
        for sort in repo.SORTS:
            cases.append((repo.ProductFilter(q=q, sort=sort), 10_000, 0))
            cases.append((repo.ProductFilter(q=q, category_id=1, in_stock=True, sort=sort), 8, 2))
    expected = run(sql_pages(awkward, cases))
    hits = {f.q: ids for (f, _, _), (ids, _) in zip(cases, expected, strict=True) if f.category_id is None}
    for (flt, limit, offset), want in zip(cases, expected, strict=True):
        got = index.query(
            flt.sort, offset, limit, category=flt.category_id, in_stock=flt.in_stock, only=hits[flt.q]
        )
        assert got == want, flt


def test_category_counts_match_sql(impl: Impl, awkward: Database) -> None:
    index = impl.CatalogIndex()
    load(index, awkward)

    async def categories() -> dict[int, int]:
        conn = await asyncpg.connect(awkward.url)
        try:
            rows, total = await repo.list_categories(conn, parent_id=None, limit=10_000, offset=0)
        finally:
            await conn.close()
        assert len(rows) == total
        return {r["id"]: r["product_count"] for r in rows}

    expected = run(categories())
    assert 0 in expected.values() or len(set(expected.values())) > 1
    assert index.category_counts() == expected
