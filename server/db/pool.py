"""The asyncpg pool: bounded acquire, faulty connections discarded, per-request query counting and slow-query
logging, visible usage (waiters included)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import asyncpg

from server.db.statements import statement_names

log = logging.getLogger("server.db")


@dataclass(slots=True)
class QueryStats:
    """Queries run and time spent in the database by one request."""

    count: int = 0
    seconds: float = 0.0
    statements: list[str] = field(default_factory=list)
    slow: list[str] | None = None  # names of this request's slow statements (counted by /metrics)


query_stats_var: ContextVar[QueryStats | None] = ContextVar("query_stats", default=None)


class PoolTimeout(TimeoutError):
    """No pool connection became free within the acquire timeout (DB_ACQUIRE_TIMEOUT_S)."""


# Faults of the connection itself: it is gone, going, or its protocol state is unknown.
_CONNECTION_FAULTS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, socket gone; TimeoutError too (a statement past DB_COMMAND_TIMEOUT_S)
    asyncpg.InterfaceError,  # connection closed or released, another operation in progress, pool closing
    asyncpg.InternalClientError,  # protocol out of step, e.g. a FATAL that arrived on an idle connection
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: admin/crash shutdown, starting up, cancelled
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,  # 25P03: the server closed the session
)

# Errors that mean "the database cannot serve right now" (answered 503 + Retry-After), as opposed to bugs
# in our SQL or code (answered 500). Every driver or connection fault belongs here: a request must never
# turn a database outage, a restart or a half-closed connection into a 500. So do the server's answers
# that a retry can cure.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    PoolTimeout,
    *_CONNECTION_FAULTS,
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, out of memory/disk
    asyncpg.exceptions.TransactionRollbackError,  # class 40: serialization failure, deadlock
    asyncpg.exceptions.InvalidCatalogNameError,  # the database is gone (dropped, or not created yet)
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # class 28: the server refuses our login
)


def leaves_connection_unusable(exc: BaseException) -> bool:
    """True when a connection that raised `exc` must not go back to the pool.

    Errors about a statement, from the server (class 22, 40, 53, ...) or from asyncpg's check of an
    argument, leave the connection in step, and it stays. So does one whose statement was cut short by
    DB_COMMAND_TIMEOUT_S (TimeoutError), by task cancellation or by the server (57014 query_canceled):
    asyncpg has sent or received the cancel, the connection stays in its "cancelling" state until the
    server's ReadyForQuery, and the pool's release waits for that (at most the acquire timeout, then
    terminates it). Every other connection fault leaves the protocol in an unknown state (a FATAL that
    arrived before the socket closed leaves it consuming an error that will never end: the next query
    fails with "cannot switch to state 12; another operation (2) is in progress"), so that connection is
    terminated and the pool opens a new one.
    """
    if isinstance(exc, TimeoutError | asyncio.CancelledError | asyncpg.exceptions.QueryCanceledError):
        return False
    return isinstance(exc, _CONNECTION_FAULTS)


class _Thresholds:
    slow_query_s = 0.1


class TrackedConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection that counts every query against the current request and logs slow ones."""

    def get_reset_query(self) -> str:
        """No reset round trip on release: pool connections never change session state (no SET,
        LISTEN or advisory locks; those use dedicated connections), so the default
        `RESET ALL; UNLISTEN *; ...` would only add a round trip to every request. Still safe after an
        error: asyncpg rolls back a transaction left open whatever this returns, a cancelled statement is
        waited for on release, and a connection that saw a connection fault is terminated by the pool's
        acquire context (`leaves_connection_unusable`), never reset and reused."""
        return ""

    def _track(self, query: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        stats = query_stats_var.get()
        if stats is not None:
            stats.count += 1
            stats.seconds += elapsed
        if elapsed >= _Thresholds.slow_query_s:
            # The statement's name, never its text's parameters; the request id is on the log line.
            name = statement_names.name(query)
            log.warning("slow query %s: %.1f ms", name, elapsed * 1000)
            if stats is not None:
                if stats.slow is None:
                    stats.slow = []
                stats.slow.append(name)

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


class _Acquire:
    """`async with pool.acquire() as conn`: a bounded wait, waiters counted, a faulty connection discarded."""

    __slots__ = ("_conn", "_pool", "_timeout")

    def __init__(self, pool: ServicePool, timeout: float) -> None:
        self._pool, self._timeout = pool, timeout
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        pool = self._pool
        pool.waiters += 1
        try:
            # One deadline for the turn and the connection. asyncio.timeout, not asyncpg's acquire(timeout=),
            # which wraps every acquire in a task of its own (asyncio.wait_for before Python 3.12).
            async with asyncio.timeout(self._timeout):
                await pool.turns.acquire()
                try:
                    self._conn = await pool.raw.acquire()
                except BaseException:
                    pool.turns.release()
                    raise
        except TimeoutError as exc:
            pool.timeouts += 1
            raise PoolTimeout(f"no database connection free within {self._timeout:g} s") from exc
        finally:
            pool.waiters -= 1
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is not None and leaves_connection_unusable(exc):
                # terminate() hands the holder back to the pool at once; the next acquire reconnects. A
                # proxy whose connection already closed is detached and refuses the call: nothing left to
                # discard.
                with contextlib.suppress(asyncpg.InterfaceError):
                    self._conn.terminate()
                    self._pool.discarded += 1
                    log.warning("discarded a pool connection after %s", type(exc).__name__)
            # A statement cut short is waited for at most the acquire timeout, then the connection goes.
            await self._pool.raw.release(self._conn, timeout=self._timeout)
        finally:
            self._pool.turns.release()


class ServicePool:
    """The per-process asyncpg pool behind the one `acquire()` every caller uses: it waits at most
    `acquire_timeout` for a connection (then PoolTimeout, answered 503), counts the waiters, and never
    returns a connection that saw a driver or connection error to the pool.

    Waiters are served first come, first served: a FIFO semaphore of the pool's size hands out turns, so a
    connection is always free for a request past it. asyncpg's own queue lets a newcomer take a connection
    released for a waiter, and the waiter goes back to the end of the queue: under saturation a few
    requests waited many times over (p99 at 64 connections several times the p50).
    """

    def __init__(self, raw: asyncpg.Pool, acquire_timeout: float) -> None:
        self.raw = raw
        self.acquire_timeout = acquire_timeout
        self.turns = asyncio.Semaphore(raw.get_max_size())
        self.waiters = 0
        self.timeouts = 0
        self.discarded = 0

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        """A connection for an `async with` block (waits at most `timeout`, default acquire_timeout)."""
        return _Acquire(self, self.acquire_timeout if timeout is None else timeout)

    async def close(self) -> None:
        """Close every connection (waits for those in use)."""
        await self.raw.close()

    def terminate(self) -> None:
        """Close every connection at once."""
        self.raw.terminate()


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    command_timeout: float,
    acquire_timeout: float,
    slow_query_ms: float,
) -> ServicePool:
    """A pool of TrackedConnections with a bounded acquire; `pool_usage(pool)` reports its use."""
    _Thresholds.slow_query_s = slow_query_ms / 1000
    raw = await asyncpg.create_pool(
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
    assert raw is not None
    return ServicePool(raw, acquire_timeout)


def pool_usage(pool: ServicePool) -> dict[str, int]:
    """Size, idle and in-use connections, requests waiting for one, timeouts and discards, and bounds."""
    raw = pool.raw
    size = raw.get_size()
    idle = raw.get_idle_size()
    return {
        "size": size,
        "idle": idle,
        "in_use": size - idle,
        "waiters": pool.waiters,
        "acquire_timeouts": pool.timeouts,
        "discarded": pool.discarded,
        "min": raw.get_min_size(),
        "max": raw.get_max_size(),
    }
