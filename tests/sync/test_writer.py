"""The sync's catalog writes (server/sync/writer.py) on a real database: only rows that differ are written,
an unchanged batch bumps no catalog version, a batch is all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, drop_database, make_database, run

from server.sync import repo, writer
from server.sync.mapping import Category, FieldMap, Item, PriceBook, map_item

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Iterator[Database]:
    database = make_database(services, template_db, tmp_path)
    yield database
    drop_database(database)


def item(n: int, **changes: object) -> Item:
    base = {
        "item_id": f"z{n}",
        "name": f"Item {n}",
        "sku": f"S-{n}",
        "cf_name_ar": f"صنف {n}",
        "description": "d",
        "category_id": "zc-1",
        "unit": "pcs",
        "available_stock": 5,
        "status": "active",
        "rate": "10.50",
        "last_modified_time": (T0 + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%S+0000"),
    }
    base.update(changes)
    return map_item(base, FieldMap())


CATEGORIES = [
    Category("zc-1", "Drinks", "مشروبات", None, 0, True),
    Category("zc-2", "Juice", None, "zc-1", 1, True),
]


async def version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT version FROM catalog_state"))


async def connect(db: Database) -> asyncpg.Connection:
    conn = await asyncpg.connect(db.url)
    await writer.prepare(conn)
    return conn


async def write(conn: asyncpg.Connection, items: list[Item], sweep: int = 1) -> writer.Written:
    async with conn.transaction():
        rate_list, _ = await writer.ensure_rate_list(conn, "consumer", "SAR")
        return await writer.write_items(conn, items, sweep=sweep, rate_list_id=rate_list)


def test_batch_writes_only_what_differs(db: Database) -> None:
    async def go() -> None:
        conn = await connect(db)
        try:
            seeded = await conn.fetchval("SELECT count(*) FROM categories WHERE is_active")
            async with conn.transaction():
                # Two inserts, one parent set, and the seed's categories (not in Zoho) deactivated.
                assert await writer.write_categories(conn, CATEGORIES) == 3 + seeded
            batch = [item(n) for n in range(50)]
            first = await write(conn, batch)
            assert (first.products_new, first.products_changed, first.prices) == (50, 0, 50)
            row = await conn.fetchrow(
                "SELECT p.name, p.name_ar, p.stock_on_hand, c.zoho_category_id, pp.price FROM products p "
                "JOIN categories c ON c.id = p.category_id JOIN product_prices pp ON pp.product_id = p.id "
                "JOIN price_lists pl ON pl.id = pp.price_list_id AND pl.code = 'consumer' "
                "WHERE zoho_item_id = 'z7'"
            )
            assert tuple(row) == ("Item 7", "صنف 7", 5, "zc-1", Decimal("10.50"))

            # The same batch again: nothing written, no catalog version, no change-feed row.
            before = await version(conn)
            feed = await conn.fetchval("SELECT count(*) FROM catalog_changes")
            again = await write(conn, batch)
            assert (again.products, again.prices) == (0, 0)
            assert await version(conn) == before
            assert await conn.fetchval("SELECT count(*) FROM catalog_changes") == feed
            async with conn.transaction():
                assert await writer.write_categories(conn, CATEGORIES) == 0
            assert await version(conn) == before

            # Two items changed (stock, price): exactly those rows.
            batch[3] = item(3, available_stock=0)
            batch[4] = item(4, rate="11")
            third = await write(conn, batch)
            assert (third.products_changed, third.prices) == (1, 1)
            assert await version(conn) == before + 2  # one products statement, one prices statement
            changed = await conn.fetch("SELECT ids FROM catalog_changes WHERE version > $1", before)
            ids = {i for r in changed for i in r["ids"]}
            assert ids == set(
                await conn.fetchval(
                    "SELECT array_agg(id) FROM products WHERE zoho_item_id = ANY($1)", ["z3", "z4"]
                )
            )
        finally:
            await conn.close()

    run(go())


def test_failed_batch_leaves_nothing(db: Database) -> None:
    async def go() -> None:
        conn = await connect(db)
        try:
            before = await version(conn)

            async def doomed_batch() -> None:
                async with conn.transaction():
                    await writer.write_items(conn, [item(n) for n in range(10)], sweep=1, rate_list_id=None)
                    await conn.execute("UPDATE sync_state SET sweep_cursor = '{\"page\": 2}'")
                    raise RuntimeError("killed mid-batch")

            with pytest.raises(RuntimeError):
                await doomed_batch()
            assert await conn.fetchval("SELECT count(*) FROM products WHERE zoho_item_id LIKE 'z%'") == 0
            assert await conn.fetchval("SELECT sweep_cursor FROM sync_state") is None
            assert await version(conn) == before
            # The staging tables were emptied by the rollback: the next batch starts clean.
            assert (await write(conn, [item(1)])).products_new == 1
        finally:
            await conn.close()

    run(go())


def test_reconcile_deactivates_unlisted_never_deletes(db: Database) -> None:
    async def go() -> None:
        conn = await connect(db)
        try:
            await write(conn, [item(n) for n in range(20)], sweep=1)
            seeded = await conn.fetchval("SELECT count(*) FROM products WHERE is_active")
            async with conn.transaction():
                # Sweep 2 lists 18 of ours (z5 invalid but identifiable), not z18/z19 nor the seeded ones.
                await writer.write_items(
                    conn,
                    [item(n) for n in range(18) if n != 5],
                    sweep=2,
                    rate_list_id=None,
                    invalid_ids=["z5"],
                )
                gone = await writer.deactivate_unlisted(conn, 2)
            assert gone == seeded - 18
            rows = await conn.fetch(
                "SELECT zoho_item_id FROM products WHERE NOT is_active AND zoho_item_id LIKE 'z%'"
            )
            assert sorted(r[0] for r in rows) == ["z18", "z19"]
            assert await conn.fetchval("SELECT count(*) FROM products") >= seeded  # nothing deleted
            before = await version(conn)
            async with conn.transaction():
                assert await writer.deactivate_unlisted(conn, 2) == 0
            assert await version(conn) == before
        finally:
            await conn.close()

    run(go())


def test_categories_cycles_and_gone(db: Database) -> None:
    async def go() -> None:
        conn = await connect(db)
        try:
            cats = [
                Category("a", "A", None, "b", 0, True),
                Category("b", "B", None, "a", 1, True),  # a <-> b: a cycle
                Category("c", "C", None, "missing", 2, True),
                Category("d", "D", None, "c", 3, True),
            ]
            async with conn.transaction():
                await writer.write_categories(conn, cats)
            rows = {
                r[0]: r[1]
                for r in await conn.fetch(
                    "SELECT c.zoho_category_id, p.zoho_category_id FROM categories c "
                    "LEFT JOIN categories p ON p.id = c.parent_id "
                    "WHERE c.zoho_category_id IN ('a', 'b', 'c', 'd')"
                )
            }
            assert rows["d"] == "c" and rows["c"] is None
            assert None in (rows["a"], rows["b"])  # the cycle is broken
            # The seed's categories are not in Zoho's list: deactivated, not deleted.
            assert await conn.fetchval("SELECT count(*) FROM categories WHERE is_active") == 4
        finally:
            await conn.close()

    run(go())


def test_price_books_and_complete_lists(db: Database) -> None:
    async def go() -> None:
        conn = await connect(db)
        try:
            await write(conn, [item(n) for n in range(5)])
            lists = await writer.price_lists(conn)
            book = PriceBook("pb-1", "Consumer", "SAR", True, True)  # name clashes with our list
            async with conn.transaction():
                list_id, made = await writer.ensure_price_book(conn, book, lists)
                assert made == 1
                n = await writer.write_prices(
                    conn, list_id, [("z0", Decimal("9.99")), ("z1", Decimal("8.00"))], complete=True
                )
            assert n == 2
            code = await conn.fetchval("SELECT code FROM price_lists WHERE id = $1", list_id)
            assert code == "zoho_pb_1"
            before = await version(conn)
            async with conn.transaction():
                assert await writer.ensure_price_book(conn, book, lists) == (list_id, 0)
                assert await writer.write_prices(conn, list_id, [("z1", Decimal("8.00"))], complete=True) == 1
            assert (
                await conn.fetchval("SELECT count(*) FROM product_prices WHERE price_list_id = $1", list_id)
                == 1
            )
            assert await version(conn) == before + 1  # one delete statement
        finally:
            await conn.close()

    run(go())


def test_a_grown_price_book_is_checked_by_probes_whatever_the_statistics(db: Database) -> None:
    # A first import: product_prices was analyzed before the book's list had a row, so the planner thinks
    # the list is (nearly) empty and loops over its rows in the complete-list check. Each loop must be one
    # probe of the staged rows' index, not a scan of every staged row (20,000 x 20,000 rows, 35 s).
    async def go() -> None:
        conn = await connect(db)
        try:
            n = 2000
            await write(conn, [item(k) for k in range(n)])
            lists = await writer.price_lists(conn)
            book = PriceBook("pb-9", "Book", "SAR", True, True)
            async with conn.transaction():
                list_id, _ = await writer.ensure_price_book(conn, book, lists)
            await conn.execute("ANALYZE product_prices")  # the list has no row yet
            prices = [(f"z{k}", Decimal("1.00")) for k in range(n)]
            async with conn.transaction():
                assert await writer.write_prices(conn, list_id, prices, complete=True) == n
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "stage_prices",
                    records=[(i, list_id, p) for i, p in prices[: n // 2]],
                    columns=repo.STAGE_PRICES_COLUMNS,
                )
                await conn.execute("ANALYZE stage_prices")
                query = repo.COUNT_PRICES_NOT_STAGED.replace("$1", str(list_id))
                plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + query))
                assert await conn.fetchval(repo.COUNT_PRICES_NOT_STAGED, list_id) == n - n // 2
            # Either the planner knows better and hashes, or each of its loops probes the index.
            assert "Hash" in plan or "stage_prices_item" in plan, plan
            scans = [line for line in plan.splitlines() if "Seq Scan on stage_prices" in line]
            assert all("loops=1)" in line for line in scans), plan  # never one scan per outer row
        finally:
            await conn.close()

    run(go())
