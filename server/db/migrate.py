"""Apply SQL migrations once, in order, recorded in schema_migrations, under an advisory lock."""

from __future__ import annotations

import hashlib
import logging
from importlib import resources

import asyncpg

log = logging.getLogger("server.db.migrate")

# Any constant works; it only has to be the same for every process that migrates this database.
_LOCK_KEY = 0x636174616C6F67  # "catalog"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
_APPLIED = "SELECT name, checksum FROM schema_migrations"
_RECORD = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"


class MigrationError(RuntimeError):
    """A recorded migration's file changed after it was applied."""


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every packaged migration, sorted by name."""
    folder = resources.files("server.db").joinpath("migrations")
    files = [f for f in folder.iterdir() if f.name.endswith(".sql")]
    return sorted((f.name, f.read_text(encoding="utf-8")) for f in files)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; return the names applied now. Safe to call concurrently."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        done = {r["name"]: r["checksum"] for r in await conn.fetch(_APPLIED)}
        for name, sql in migration_files():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != checksum:
                    raise MigrationError(f"migration {name} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(_RECORD, name, checksum)
            log.info("applied migration %s", name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
