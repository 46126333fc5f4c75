"""The asyncpg pool: tunable size, per-request query counting and slow-query logging, visible usage."""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg

log = logging.getLogger("server.db")


@dataclass(slots=True)
class QueryStats:
    """Queries run and time spent in the database by one request."""

    count: int = 0
    seconds: float = 0.0
    statements: list[str] = field(default_factory=list)


query_stats_var: ContextVar[QueryStats | None] = ContextVar("query_stats", default=None)


# Driver errors that mean "the database cannot be reached right now" (answered 503 + Retry-After), as
# opposed to bugs (answered 500).
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class _Thresholds:
    slow_query_s = 0.1


class TrackedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that counts every query against the current request and logs slow ones."""

    def get_reset_query(self) -> str:
        """No reset round trip on release: pool connections never change session state (no SET,
        LISTEN or advisory locks; those use dedicated connections), so the default
        `RESET ALL; UNLISTEN *; ...` would only add a round trip to every request."""
        return ""

    def _track(self, query: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        stats = query_stats_var.get()
        if stats is not None:
            stats.count += 1
            stats.seconds += elapsed
        if elapsed >= _Thresholds.slow_query_s:
            log.warning("slow query %.1f ms: %s", elapsed * 1000, " ".join(query.split())[:300])

    async def fetch(self, query: str, *args: Any, timeout: float | None = None, **kw: Any) -> Any:
        """asyncpg's fetch, counted and timed."""
        started = time.perf_counter()
        try:
            return await super().fetch(query, *args, timeout=timeout, **kw)
        finally:
            self._track(query, started)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None, **kw: Any) -> Any:
        """asyncpg's fetchrow, counted and timed."""
        started = time.perf_counter()
        try:
            return await super().fetchrow(query, *args, timeout=timeout, **kw)
        finally:
            self._track(query, started)

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        """asyncpg's fetchval, counted and timed."""
        started = time.perf_counter()
        try:
            return await super().fetchval(query, *args, column=column, timeout=timeout)
        finally:
            self._track(query, started)

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        """asyncpg's execute, counted and timed."""
        started = time.perf_counter()
        try:
            return str(await super().execute(query, *args, timeout=timeout))
        finally:
            self._track(query, started)


async def create_pool(
    dsn: str, *, min_size: int, max_size: int, command_timeout: float, slow_query_ms: float
) -> asyncpg.Pool:
    """A pool of TrackedConnections; `pool_usage(pool)` reports its use."""
    _Thresholds.slow_query_s = slow_query_ms / 1000
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        connection_class=TrackedConnection,
        # Statements are few and constant (see catalog.repo); keep them all prepared.
        statement_cache_size=512,
        max_inactive_connection_lifetime=300,
        server_settings={"application_name": "catalog-api", "jit": "off"},
    )
    assert pool is not None
    return pool


def pool_usage(pool: asyncpg.Pool) -> dict[str, int]:
    """Size, idle and in-use connections, and the configured bounds."""
    size = pool.get_size()
    idle = pool.get_idle_size()
    return {
        "size": size,
        "idle": idle,
        "in_use": size - idle,
        "min": pool.get_min_size(),
        "max": pool.get_max_size(),
    }
