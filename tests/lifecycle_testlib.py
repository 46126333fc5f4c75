"""Helpers of the lifecycle tests: a table lock held on a connection of its own."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from catalog_testlib import Database


class TableLock:
    """LOCK TABLE products in an open transaction on a connection of its own, until `release()`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(db.url))
        self.loop.run_until_complete(self.conn.execute("BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE"))

    def waiters(self) -> list[str]:
        """The statements of the server's queries waiting for this lock."""
        # Inside a transaction pg_stat_activity is read once and kept: drop that snapshot each time.
        self.loop.run_until_complete(self.conn.execute("SELECT pg_stat_clear_snapshot()"))
        rows = self.loop.run_until_complete(
            self.conn.fetch(
                "SELECT left(query, 200) q FROM pg_stat_activity"
                " WHERE datname = $1 AND wait_event_type = 'Lock' AND application_name = 'catalog-api'",
                self.db.name,
            )
        )
        return [r["q"] for r in rows]

    def waiting(self) -> int:
        """Server queries waiting for this lock."""
        return len(self.waiters())

    def wait_for_waiters(self, n: int, timeout: float = 15) -> None:
        """Until n server queries are blocked on the lock."""
        deadline = time.monotonic() + timeout
        while self.waiting() < n:
            if time.monotonic() > deadline:
                rows = self.loop.run_until_complete(
                    self.conn.fetch(
                        "SELECT application_name, state, wait_event_type, wait_event, left(query, 60) q"
                        " FROM pg_stat_activity WHERE datname = $1",
                        self.db.name,
                    )
                )
                raise AssertionError(f"only {self.waiting()} of {n} requests reached the lock: {rows}")
            time.sleep(0.05)

    def release(self) -> None:
        """Roll back: the blocked queries go on."""
        if not self.conn.is_closed():
            self.loop.run_until_complete(self.conn.execute("ROLLBACK"))
            self.loop.run_until_complete(self.conn.close())
        self.loop.close()
