"""The service's pool against a real PostgreSQL: bounded acquire, waiters, faulty connections replaced,
statement errors kept apart from outages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from catalog_testlib import Database, Services, drop_database, make_database, run

from server.db.pool import (
    DATABASE_UNAVAILABLE,
    PoolTimeout,
    ServicePool,
    create_pool,
    pool_usage,
)


@pytest.fixture(scope="module")
def db(
    services: Services, template_db: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Database:
    """A copy of the template database for this module."""
    database = make_database(services, template_db, tmp_path_factory.mktemp("pool"))
    yield database  # type: ignore[misc]
    drop_database(database)


async def small_pool(db: Database, size: int = 1, acquire_timeout: float = 0.3) -> ServicePool:
    """A pool like the service's, with `size` connections."""
    return await create_pool(
        db.url,
        min_size=1,
        max_size=size,
        command_timeout=5,
        acquire_timeout=acquire_timeout,
        slow_query_ms=1000,
    )


def test_acquire_waits_at_most_the_timeout_and_counts_waiters(db: Database) -> None:
    async def go() -> None:
        pool = await small_pool(db)
        try:
            async with pool.acquire():
                waiting = asyncio.create_task(pool.acquire().__aenter__())
                await asyncio.sleep(0.1)
                assert pool_usage(pool)["waiters"] == 1
                with pytest.raises(PoolTimeout):
                    await waiting
                assert isinstance(PoolTimeout(), DATABASE_UNAVAILABLE)
            usage = pool_usage(pool)
            assert (usage["waiters"], usage["acquire_timeouts"], usage["in_use"]) == (0, 1, 0)
        finally:
            await pool.close()

    run(go())


def test_connection_that_saw_a_connection_fault_is_replaced(db: Database) -> None:
    async def go() -> None:
        pool = await small_pool(db)
        try:
            async with pool.acquire() as conn:
                first = await conn.fetchval("SELECT pg_backend_pid()")
            with pytest.raises(DATABASE_UNAVAILABLE):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT pg_backend_pid()") != first
        finally:
            await pool.close()

    run(go())


def test_statement_errors_and_usage_errors_keep_the_connection(db: Database) -> None:
    """Errors about a statement (from the server or from asyncpg's argument check) are not outages, and the
    connection stays in the pool."""

    async def go() -> None:
        pool = await small_pool(db)
        try:
            async with pool.acquire() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
            for sql, args in (("SELECT $1::int", ("not a number",)), ("SELECT 1 / 0", ())):
                with pytest.raises(asyncpg.PostgresError) as caught:
                    async with pool.acquire() as conn:
                        await conn.fetchval(sql, *args)
                assert not isinstance(caught.value, DATABASE_UNAVAILABLE), caught.value
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            assert pool_usage(pool)["discarded"] == 0
        finally:
            await pool.close()

    run(go())


def test_waiters_are_served_in_arrival_order(db: Database) -> None:
    """A request that asks while another waits queues behind it, whatever the moment it asks at relative
    to the release: asyncpg's own queue hands the connection released for the waiter to a newcomer that
    asks at the right moment, and the waiter goes back to the end of the line (under saturation a few
    requests waited many times over: the p99 of a cold page)."""

    async def go() -> None:
        pool = await small_pool(db, acquire_timeout=5)
        order: list[str] = []

        async def user(name: str, yields: int = 0) -> None:
            for _ in range(yields):
                await asyncio.sleep(0)
            async with pool.acquire():
                order.append(name)

        try:
            for yields in range(8):  # the newcomer asks 0..7 loop steps after the release begins
                order.clear()
                holding = pool.acquire()
                await holding.__aenter__()
                first = asyncio.create_task(user("first"))
                await asyncio.sleep(0.02)  # first is waiting
                later = asyncio.create_task(user("later", yields))
                await holding.__aexit__(None, None, None)
                await asyncio.gather(first, later)
                assert order == ["first", "later"], yields
            assert pool_usage(pool)["in_use"] == 0
        finally:
            await pool.close()

    run(go())
