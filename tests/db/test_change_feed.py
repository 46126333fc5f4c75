"""The change feed (migration 0005): which ids each catalog version changed, in commit order, with gaps."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, admin_sql, drop_database, make_database, run

from server.catalog import repo
from server.db.migrate import migration_files


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Database:
    """A fresh copy of the template database."""
    database = make_database(services, template_db, tmp_path)
    yield database  # type: ignore[misc]
    drop_database(database)


async def _version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT version FROM catalog_state"))


@contextlib.asynccontextmanager
async def _listening(db: Database) -> AsyncIterator[tuple[asyncpg.Connection, asyncio.Queue[str]]]:
    """A writer connection and the payloads of channel `catalog` as a LISTEN connection receives them."""
    listener = await asyncpg.connect(db.url)
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("catalog", lambda *a: got.put_nowait(a[3]))
        writer = await asyncpg.connect(db.url)
        try:
            yield writer, got
        finally:
            await writer.close()
    finally:
        await listener.close()


_INSERT_PRODUCTS = (
    "INSERT INTO products (id, zoho_item_id, name) VALUES (9001, 'n-1', 'N1'), (9002, 'n-2', 'N2')"
)
_INSERT_CATEGORIES = (
    "INSERT INTO categories (id, zoho_category_id, name) "
    "VALUES (901, 'c-901', 'C901'), (902, 'c-902', 'C902')"
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # products: one row, several rows, insert, delete (its prices go by cascade: a second version)
        ("UPDATE products SET stock_on_hand = 7 WHERE id = 2", [("products", [2])]),
        ("UPDATE products SET is_active = NOT is_active WHERE id = 3", [("products", [3])]),
        (
            "UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id BETWEEN 10 AND 14",
            [("products", [10, 11, 12, 13, 14])],
        ),
        (_INSERT_PRODUCTS, [("products", [9001, 9002])]),
        ("DELETE FROM products WHERE id = 30", [("products", [30]), ("product_prices", [30])]),
        ("DELETE FROM products WHERE id IN (31, 33)", [("products", [31, 33]), ("product_prices", [31, 33])]),
        # product_prices: the product ids, each once however many of its prices changed
        ("UPDATE product_prices SET price = price + 1 WHERE product_id = 1", [("product_prices", [1])]),
        (
            "UPDATE product_prices SET price = price + 1 WHERE product_id IN (4, 5)",
            [("product_prices", [4, 5])],
        ),
        ("DELETE FROM product_prices WHERE product_id = 6", [("product_prices", [6])]),
        (
            _INSERT_PRODUCTS + "; INSERT INTO product_prices (product_id, price_list_id, price) "
            "SELECT 9001, id, 1 FROM price_lists",
            [("product_prices", [9001])],
        ),
        # categories
        ("UPDATE categories SET name = name || '!' WHERE id = 1", [("categories", [1])]),
        ("UPDATE categories SET sort_order = sort_order + 1 WHERE id IN (2, 3)", [("categories", [2, 3])]),
        (_INSERT_CATEGORIES, [("categories", [901, 902])]),
        # ON DELETE SET NULL of their children and products runs as two more statements: two more versions
        (
            _INSERT_CATEGORIES + "; DELETE FROM categories WHERE id IN (901, 902)",
            [("categories", [901, 902]), ("categories", []), ("products", [])],
        ),
        (
            "DELETE FROM categories WHERE id = 1",
            [("categories", [1]), ("categories", [2, 3, 4, 5, 6]), ("products", [])],
        ),
        # price_lists: everything may have changed
        ("UPDATE price_lists SET name = name WHERE code = 'retail'", [("price_lists", None)]),
        ("TRUNCATE product_prices", [("product_prices", None)]),
    ],
)
def test_each_statement_logs_its_ids_at_its_version(
    db: Database, sql: str, expected: list[tuple[str, list[int] | None]]
) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            # A setup statement first when the case has two (statements separated by "; ").
            *setup, sql_ = sql.split("; ")
            for statement in setup:
                await conn.execute(statement)
            before = await _version(conn)
            await conn.execute(sql_)
            after = await _version(conn)
            got = await repo.changes_since(conn, before)
            assert got == [(before + i + 1, tbl, ids) for i, (tbl, ids) in enumerate(expected)]
            assert after == before + len(expected)
            assert await repo.changes_since(conn, after) == []
        finally:
            await conn.close()

    run(go())


def test_statement_matching_no_row_bumps_and_logs_empty_ids(db: Database) -> None:
    """Today's behaviour (0001/0002): a statement trigger fires for zero rows, so the version moves; the log
    records it with no ids, so the history stays without holes."""

    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            before = await _version(conn)
            for sql in (
                "UPDATE products SET stock_on_hand = 1 WHERE false",
                "DELETE FROM product_prices WHERE false",
                "UPDATE categories SET name = 'x' WHERE false",
            ):
                await conn.execute(sql)
            assert await repo.changes_since(conn, before) == [
                (before + 1, "products", []),
                (before + 2, "product_prices", []),
                (before + 3, "categories", []),
            ]
        finally:
            await conn.close()

    run(go())


def test_several_statements_in_one_transaction_and_rollback(db: Database) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            before = await _version(conn)
            async with conn.transaction():
                await conn.execute("UPDATE products SET stock_on_hand = 1 WHERE id = 7")
                await conn.execute("UPDATE product_prices SET price = 2 WHERE product_id = 8")
            tx = conn.transaction()
            await tx.start()
            await conn.execute("UPDATE products SET stock_on_hand = 1 WHERE id = 9")
            await tx.rollback()
            assert await repo.changes_since(conn, before) == [
                (before + 1, "products", [7]),
                (before + 2, "product_prices", [8]),
            ]
        finally:
            await conn.close()

    run(go())


def test_concurrent_writers_get_versions_in_commit_order(db: Database) -> None:
    """B writes while A is open: B waits on the catalog_state row until A commits, so all of A's versions
    come before B's even though A wrote again after B started writing."""

    async def go() -> None:
        a, b, watcher = [await asyncpg.connect(db.url) for _ in range(3)]
        try:
            before = await _version(watcher)
            b_pid = b.get_server_pid()
            ta, tb = a.transaction(), b.transaction()
            await ta.start()
            await tb.start()
            await b.execute("SELECT 1")  # B's transaction is under way before A writes
            await a.execute("UPDATE products SET stock_on_hand = 1 WHERE id = 11")
            b_write = asyncio.ensure_future(b.execute("UPDATE products SET stock_on_hand = 1 WHERE id = 12"))
            for _ in range(100):  # until B is blocked on A's lock
                waiting = await watcher.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", b_pid
                )
                if waiting:
                    break
                await asyncio.sleep(0.02)
            assert waiting and not b_write.done()
            # A reader meanwhile sees neither: nothing is committed.
            assert await repo.changes_since(watcher, before) == []
            await a.execute("UPDATE product_prices SET price = 3 WHERE product_id = 13")
            await ta.commit()
            await asyncio.wait_for(b_write, 5)
            assert await repo.changes_since(watcher, before) == [
                (before + 1, "products", [11]),
                (before + 2, "product_prices", [13]),
            ]
            await tb.commit()
            assert await repo.changes_since(watcher, before) == [
                (before + 1, "products", [11]),
                (before + 2, "product_prices", [13]),
                (before + 3, "products", [12]),
            ]
        finally:
            for c in (a, b, watcher):
                await c.close()

    run(go())


def test_gap_after_pruning_or_before_the_log_returns_none(db: Database) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            start = await _version(conn)
            # The log begins with migration 0005: the seed's versions are there, those before it are not.
            first = await conn.fetchval("SELECT min(version) FROM catalog_changes")
            assert await repo.changes_since(conn, first - 2) is None
            assert await repo.changes_since(conn, first - 1) is not None
            for i in range(5):
                await conn.execute("UPDATE products SET stock_on_hand = $1 WHERE id = 1", i)
            assert [c[0] for c in await repo.changes_since(conn, start) or []] == list(
                range(start + 1, start + 6)
            )
            assert await repo.prune_changes(conn, 3) > 0  # keeps start+3 .. start+5
            assert await repo.changes_since(conn, start) is None
            assert await repo.changes_since(conn, start + 1) is None
            assert [c[0] for c in await repo.changes_since(conn, start + 2) or []] == [
                start + 3,
                start + 4,
                start + 5,
            ]
            assert await repo.changes_since(conn, start + 5) == []
            assert await repo.changes_since(conn, start + 6) is None  # ahead of this catalog: not its history
        finally:
            await conn.close()

    run(go())


def test_triggers_prune_every_thousand_versions(db: Database) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            # Jump ahead so the next statement lands on a multiple of 1,000 with more than 10,000 behind it.
            old = await _version(conn)
            await conn.execute("UPDATE catalog_state SET version = 20999")
            await conn.execute(
                "INSERT INTO catalog_changes "
                "SELECT v, 'products', '{1}' FROM generate_series($1::bigint, 20999) v",
                old + 1,
            )
            await conn.execute("UPDATE products SET stock_on_hand = 5 WHERE id = 1")
            assert await _version(conn) == 21000
            assert await conn.fetchval("SELECT min(version) FROM catalog_changes") == 11001
            assert await conn.fetchval("SELECT count(*) FROM catalog_changes") == 10000
            assert await repo.changes_since(conn, 11000) is not None
            assert await repo.changes_since(conn, 10999) is None
        finally:
            await conn.close()

    run(go())


def test_notify_payload_unchanged(db: Database) -> None:
    async def go() -> None:
        async with _listening(db) as (writer, got):
            before = await _version(writer)
            await writer.execute("UPDATE products SET stock_on_hand = 3 WHERE id = 1")
            await writer.execute("UPDATE products SET is_active = NOT is_active WHERE id = 1")
            await writer.execute("UPDATE price_lists SET name = name")
            payloads = [await asyncio.wait_for(got.get(), 2) for _ in range(3)]
            assert payloads == [
                f"{before + 1}:product_data",
                f"{before + 2}:products",
                f"{before + 3}:price_lists",
            ]

    run(go())


def test_many_row_updates_name_the_identity_change_of_any_row(db: Database) -> None:
    # 0015 finds an identity change (zoho_item_id, is_active, id) by a set difference of the statement's
    # new and old rows, not by joining them (which could loop over one for each row of the other).
    async def go() -> None:
        async with _listening(db) as (writer, got):
            ids = [r[0] for r in await writer.fetch("SELECT id FROM products ORDER BY id LIMIT 50")]
            new_id = await writer.fetchval(
                "INSERT INTO products (zoho_item_id, name) VALUES ('feed-id-move', 'Moved') RETURNING id"
            )
            await asyncio.wait_for(got.get(), 2)
            before = await _version(writer)
            statements = [
                ("UPDATE products SET stock_on_hand = stock_on_hand + 1 WHERE id = ANY($1)", ids),
                (
                    "UPDATE products SET stock_on_hand = stock_on_hand + 1, is_active = (id <> $1[10])"
                    " WHERE id = ANY($1)",
                    ids,
                ),
                ("UPDATE products SET is_active = true WHERE id = ANY($1)", ids),
                (
                    "UPDATE products SET zoho_item_id = zoho_item_id || 'x'"
                    " WHERE id = ANY($1) AND id = (SELECT max(i) FROM unnest($1::int[]) i)",
                    ids,
                ),
                ("UPDATE products SET id = id + 1000000 WHERE id = ANY($1)", [new_id]),
                ("UPDATE products SET name = name WHERE id = ANY($1)", ids),
            ]
            for sql, args in statements:
                await writer.execute(sql, args)
            payloads = [await asyncio.wait_for(got.get(), 2) for _ in statements]
            topics = ["product_data", "products", "products", "products", "products", "product_data"]
            assert payloads == [f"{before + k}:{t}" for k, t in enumerate(topics, 1)]
            # Every row the statements touched is named, once.
            changed = await writer.fetchval("SELECT ids FROM catalog_changes WHERE version = $1", before + 1)
            assert sorted(changed) == sorted(ids)

    run(go())


def test_trigger_overhead_of_single_row_stock_updates(services: Services) -> None:
    """Prints the time of 1,000 single-row stock updates (autocommit) under 0004's triggers, 0005's and
    0005's with 0013's commit stamp."""
    name = "catalog_feed_bench_" + str(int(time.time() * 1000) % 10**9)

    async def timed(conn: asyncpg.Connection) -> float:
        t0 = time.perf_counter()
        for i in range(1000):
            await conn.execute("UPDATE products SET stock_on_hand = $1 WHERE id = $2", i, 1 + i % 100)
        return time.perf_counter() - t0

    async def go() -> None:
        await admin_sql(services, f"CREATE DATABASE {name}")
        conn = await asyncpg.connect(services.db_url(name))
        try:
            files = migration_files()
            for fname, sql in files:
                if fname < "0005":
                    await conn.execute(sql)
            await conn.execute(
                "INSERT INTO products (zoho_item_id, name) "
                "SELECT 'p-' || i, 'P ' || i FROM generate_series(1, 100) i"
            )
            await timed(conn)  # warm up
            old = min([await timed(conn) for _ in range(3)])
            await conn.execute(dict(files)["0005_catalog_changes.sql"])
            await timed(conn)
            new = min([await timed(conn) for _ in range(3)])
            for fname, sql in files:
                if "0005" < fname[:4] <= "0013":
                    await conn.execute(sql)
            await timed(conn)
            stamped = min([await timed(conn) for _ in range(3)])
            start = await _version(conn)
            await timed(conn)
            changes, times = await repo.timed_changes_since(conn, start)
            assert changes is not None and len(changes) == 1000 and len(times) == 1000
            assert times == sorted(times)  # autocommit: each commit after the one before
            print(
                f"\n1,000 single-row stock updates (best of 3): 0004 triggers {old * 1000:.0f} ms, "
                f"0005 triggers {new * 1000:.0f} ms ({(new - old) / old * 100:+.0f} %, "
                f"{(new - old) * 1000:+.1f} us per update), with 0013's commit stamp {stamped * 1000:.0f} ms "
                f"({(stamped - new) * 1000:+.1f} us per update)"
            )
        finally:
            await conn.close()
            await admin_sql(services, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    run(go())
