"""Migrations are recorded and idempotent; catalog triggers bump the version and notify on commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, drop_database, make_database, run

from server.db.migrate import MigrationError, migrate, migration_files


@pytest.fixture
def db(services: Services, template_db: tuple[str, Path], tmp_path: Path) -> Database:
    """A fresh copy of the template database."""
    database = make_database(services, template_db, tmp_path)
    yield database  # type: ignore[misc]
    drop_database(database)


def test_migrations_are_recorded_and_idempotent(db: Database) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            assert await migrate(conn) == []
            names = [r[0] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
            assert names == [n for n, _ in migration_files()]
            # Concurrent migrators serialise on the advisory lock and apply nothing twice.
            others = [await asyncpg.connect(db.url) for _ in range(3)]
            try:
                results = await asyncio.gather(*(migrate(c) for c in others))
            finally:
                for c in others:
                    await c.close()
            assert results == [[], [], []]
        finally:
            await conn.close()

    run(go())


def test_changed_migration_is_refused(db: Database) -> None:
    run(db.execute("UPDATE schema_migrations SET checksum = 'x'"))

    async def go() -> None:
        conn = await asyncpg.connect(db.url)
        try:
            with pytest.raises(MigrationError):
                await migrate(conn)
        finally:
            await conn.close()

    run(go())


@contextlib.asynccontextmanager
async def listening(db: Database) -> AsyncIterator[tuple[asyncpg.Connection, asyncio.Queue[str]]]:
    """A writer connection, and the payloads of `catalog` notifications as a separate session sees them."""
    listener = await asyncpg.connect(db.url)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("catalog", lambda *a: got.put_nowait(a[3]))
    writer = await asyncpg.connect(db.url)
    try:
        yield writer, got
    finally:
        await writer.close()
        await listener.close()


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("UPDATE product_prices SET price = price + 1 WHERE product_id = 1", "product_prices"),
        ("UPDATE products SET stock_on_hand = 0 WHERE id = 2", "product_data"),
        ("UPDATE products SET is_active = NOT is_active WHERE id = 3", "products"),
        ("UPDATE products SET zoho_item_id = zoho_item_id || 'x' WHERE id = 4", "products"),
        ("INSERT INTO products (zoho_item_id, name) VALUES ('new-item-1', 'New')", "products"),
        ("DELETE FROM products WHERE id = 5", "products"),
        ("UPDATE categories SET name = name || '!' WHERE id = 1", "categories"),
        ("UPDATE price_lists SET name = name WHERE code = 'retail'", "price_lists"),
        ("DELETE FROM product_prices WHERE product_id = 3", "product_prices"),
    ],
)
def test_every_change_bumps_version_and_notifies_on_commit(db: Database, sql: str, table: str) -> None:
    async def go() -> None:
        async with listening(db) as (writer, got):
            before = await writer.fetchval("SELECT version FROM catalog_state")
            async with writer.transaction():
                await writer.execute(sql)
                with pytest.raises(asyncio.TimeoutError):  # nothing before the commit
                    await asyncio.wait_for(got.get(), 0.2)
            payloads = [await asyncio.wait_for(got.get(), 2)]
            await asyncio.sleep(0.2)  # a cascade (deleting a product deletes its prices) notifies twice
            while not got.empty():
                payloads.append(got.get_nowait())
            after = await writer.fetchval("SELECT version FROM catalog_state")
            assert after == before + len(payloads)
            versions = [int(p.split(":")[0]) for p in payloads]
            assert versions == list(range(before + 1, after + 1))
            assert payloads[0] == f"{before + 1}:{table}"

    run(go())


def test_rolled_back_change_notifies_nothing(db: Database) -> None:
    async def go() -> None:
        async with listening(db) as (writer, got):
            before = await writer.fetchval("SELECT version FROM catalog_state")
            tx = writer.transaction()
            await tx.start()
            await writer.execute("UPDATE products SET name = 'x' WHERE id = 1")
            await tx.rollback()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(got.get(), 0.3)
            assert await writer.fetchval("SELECT version FROM catalog_state") == before

    run(go())
