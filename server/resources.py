"""Per-process resources, made in Robyn's start-up handler (never at import) and closed at shutdown.

Each process owns: the asyncpg pool, a Redis client, the ImageIndex (with a background refresher), and a
dedicated LISTEN connection that keeps `catalog` (epoch, version) current and reloads the image index's
catalog map when products change. On reconnect it re-reads the state, so a lost notification never leaves
this process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from array import array
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from core_ext import USING_COMPILED, ImageIndex
from server.cache import CacheConfig, PageCache
from server.catalog import repo
from server.catalog.hits import SearchHits
from server.catalog.live import LiveCatalog, trim_heap
from server.db.pool import DATABASE_UNAVAILABLE, ServicePool, create_pool
from server.ratelimit import RateLimiter
from server.settings import Settings

log = logging.getLogger("server.resources")

CHANNEL = "catalog"


@dataclass(slots=True)
class CatalogState:
    """What this process knows of the catalog: the database epoch and the last version seen."""

    epoch: str = ""
    version: int = 0
    listening: bool = False
    reconnects: int = 0
    map_loads: int = 0
    last_change_monotonic: float = field(default_factory=time.monotonic)


TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)
TASK_RESTART_MIN_S = 0.1
TASK_RESTART_MAX_S = 10.0
TASK_HEALTHY_RUN_S = 30.0  # a loop that ran this long before failing starts its backoff afresh


@dataclass(slots=True)
class TaskHealth:
    """How a background task has fared: failures, the last error's type and when it happened."""

    name: str
    failures: int = 0
    consecutive: int = 0  # failures since the task last did its job
    restarts: int = 0
    last_error: str = ""
    last_failure_monotonic: float = 0.0

    def failed(self, exc: BaseException) -> None:
        """Record one failure."""
        self.failures += 1
        self.consecutive += 1
        self.last_error = type(exc).__name__
        self.last_failure_monotonic = time.monotonic()

    def ok(self) -> None:
        """The task did its job (reconnected, reloaded, rescanned): whatever failed before is over."""
        self.consecutive = 0

    def failing(self) -> bool:
        """True while the task keeps failing (no success since its last failure)."""
        return self.consecutive > 0

    def report(self) -> dict[str, Any]:
        """The task's line in /ready."""
        doc: dict[str, Any] = {
            "failing": self.failing(),
            "failures": self.failures,
            "consecutive_failures": self.consecutive,
            "restarts": self.restarts,
        }
        if self.failures:
            doc["last_error"] = self.last_error
            doc["last_failure_s_ago"] = round(time.monotonic() - self.last_failure_monotonic, 1)
        return doc


class Resources:
    """Everything a handler needs in this process; built by `start`, released by `close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: ServicePool = None  # type: ignore[assignment]  # set in start()
        self.redis: aioredis.Redis | None = None
        self.images = ImageIndex(str(settings.UPLOADS_DIR), settings.IMAGE_REFRESH_INTERVAL_S)
        self.catalog = CatalogState()
        self.started_at = time.time()
        self.pid = os.getpid()
        self.using_compiled = USING_COMPILED
        self.cache = PageCache(CacheConfig(enabled=False), None)  # replaced in start()
        self.limiter = RateLimiter(None, enabled=False)  # replaced in start()
        self._listen_conn: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[Any]] = set()  # one-shot work (a sync run): cancelled at close
        self.tasks: dict[str, TaskHealth] = {}
        self._map_dirty = asyncio.Event()
        # The in-memory product list (CATALOG_INDEX); None when off.
        self.live: LiveCatalog | None = None
        self._live_dirty = asyncio.Event()
        self._index_conn: asyncpg.Connection | None = None  # the catch-ups' own connection
        self._closing = False

    @property
    def generation(self) -> str:
        """What every cached page depends on: database epoch, catalog version, set of images."""
        c = self.catalog
        return f"{c.epoch}:{c.version}:{self.images.fingerprint}"

    def current_generation(self) -> str:
        """`generation`, as a callable for the page cache."""
        return self.generation

    def index_generation(self) -> str:
        """What every answer computed from the index depends on beyond its stamp (LiveCatalog.stamp):
        database epoch, the index's structure version, set of images. Product writes do not change it."""
        live = self.live
        assert live is not None
        return f"{live.epoch}:i{live.structure}:{self.images.fingerprint}"

    async def fresh_index(self) -> LiveCatalog | None:
        """The index, once it reflects every change this process has heard of (waiting at most
        CATALOG_INDEX_WAIT_MS for its catch-up); None when it is off or still behind: answer from SQL."""
        live, c = self.live, self.catalog
        if live is None:
            return None
        if live.epoch == c.epoch and live.version >= c.version:
            return live
        wait_s = self.settings.CATALOG_INDEX_WAIT_MS / 1000
        return live if await live.wait_for(c.epoch, c.version, wait_s) else None

    @property
    def dsn(self) -> str:
        """The database URL (secret: never log it)."""
        assert self.settings.DATABASE_URL is not None
        return self.settings.DATABASE_URL.get_secret_value()

    async def start(self) -> None:
        """Open the pool, Redis, the listener; load the catalog map and the image index."""
        s = self.settings
        self.pool = await create_pool(
            self.dsn,
            min_size=s.DB_POOL_MIN,
            max_size=s.DB_POOL_MAX,
            command_timeout=s.DB_COMMAND_TIMEOUT_S,
            acquire_timeout=s.DB_ACQUIRE_TIMEOUT_S,
            slow_query_ms=s.SLOW_QUERY_MS,
        )
        if s.REDIS_URL is not None:
            timeout = s.CACHE_REDIS_TIMEOUT_MS / 1000
            self.redis = aioredis.Redis.from_url(
                s.REDIS_URL.get_secret_value(),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=10,
            )
        self.limiter = RateLimiter.from_settings(s)
        limiter = self.limiter
        self.cache = PageCache(
            CacheConfig.from_settings(s), self.redis, redis_suspect=lambda: limiter.degraded
        )
        await self._connect_listener()
        await self._load_map()
        if s.CATALOG_INDEX:
            self.live = LiveCatalog(
                s.CONSUMER_PRICE_LIST,
                hits=SearchHits(s.SEARCH_MEMO_ENTRIES, s.SEARCH_MEMO_IDS),
                row_store_bytes=s.ROW_STORE_MB * 1_048_576,
            )
            async with self.pool.acquire() as conn:
                await self.live.rebuild(conn)
            self._live_dirty.set()  # changes committed since the listener read the version
            self._start_task("catalog-index", self._index_updater)
        self._start_task("listener-watchdog", self._listener_watchdog)
        self._start_task("catalog-map-reloader", self._map_reloader)
        self._start_task("image-refresher", self._image_refresher)

    async def close(self, budget_s: float = 3.0) -> None:
        """Stop background tasks and close every connection, within about `budget_s`."""
        self._closing = True
        for job in self._jobs:
            job.cancel()
        if self._jobs:  # a cancelled job records its end (a sync run: one UPDATE) before its task ends
            await asyncio.wait(list(self._jobs), timeout=budget_s / 2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listen_conn.close(), budget_s / 2)
        await self._drop_index_connection()
        with contextlib.suppress(Exception):
            await self.limiter.aclose()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), budget_s / 2)
            except Exception:  # a connection still busy past the drain: cut it
                self.pool.terminate()

    # -- background tasks -------------------------------------------------------------------------

    def start_task(self, name: str, body: Callable[[], Awaitable[None]]) -> TaskHealth:
        """Run `body` for the life of this process, restarted when it fails; shown in /ready's tasks."""
        self._start_task(name, body)
        return self.tasks[name]

    def spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run one piece of work in the background; close() cancels it (and waits a moment for it)."""
        task = asyncio.create_task(work, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)
        return task

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background job %s failed", task.get_name(), exc_info=exc)

    def _start_task(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        health = self.tasks[name] = TaskHealth(name)
        self._tasks.append(asyncio.create_task(self._supervised(health, body), name=name))

    async def _supervised(self, health: TaskHealth, body: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop forever: any exception is logged with its traceback and the loop is
        restarted after a growing delay; /ready shows a task that keeps failing."""
        delay = TASK_RESTART_MIN_S
        while not self._closing:
            started = time.monotonic()
            try:
                await body()
                raise RuntimeError("background loop returned")  # they never should
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    return
                if time.monotonic() - started > TASK_HEALTHY_RUN_S:
                    delay = TASK_RESTART_MIN_S  # it had been running fine: a fresh failure
                health.failed(exc)
                log.exception(
                    "background task %s failed (%d so far); restarting in %.1fs",
                    health.name,
                    health.failures,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, TASK_RESTART_MAX_S)
                health.restarts += 1

    # -- catalog version and LISTEN ---------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        version_text, _, table = payload.partition(":")
        with contextlib.suppress(ValueError):
            version = int(version_text)
            if version > self.catalog.version:
                self.catalog.version = version
                self.catalog.last_change_monotonic = time.monotonic()
        if table in ("", "products"):
            self._map_dirty.set()
        self._live_dirty.set()

    def _on_terminated(self, _conn: Any) -> None:
        self.catalog.listening = False

    async def _connect_listener(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=5, server_settings={"application_name": "catalog-listen"}
        )
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_terminated)
            # Read the state only after LISTEN is active: a change committed in between is then either in
            # the state we read or in a notification we will get.
            epoch, version = await repo.catalog_state(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 1)  # no connection leaked per failed attempt
            raise
        if epoch != self.catalog.epoch or version > self.catalog.version:
            self.catalog.epoch, self.catalog.version = epoch, version
            self.catalog.last_change_monotonic = time.monotonic()
        self._listen_conn = conn
        self.catalog.listening = True

    async def _listener_watchdog(self) -> None:
        delay = 0.1
        while not self._closing:
            conn = self._listen_conn
            if conn is not None and not conn.is_closed() and self.catalog.listening:
                await asyncio.sleep(0.2)
                continue
            try:
                await self._connect_listener()
            except TRANSIENT_DB_ERRORS as exc:
                self.tasks["listener-watchdog"].failed(exc)
                log.warning("LISTEN connection lost, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self.tasks["listener-watchdog"].ok()
            self.catalog.reconnects += 1
            self._map_dirty.set()  # products may have changed while we were away
            self._live_dirty.set()
            log.info("LISTEN connection re-established; catalog version %d", self.catalog.version)

    # -- catalog map and image index --------------------------------------------------------------

    async def _load_map(self) -> None:
        # Streamed into two flat sequences (no dict, no million records at once); the index keeps them
        # as one sorted arena of names.
        names: list[str] = []
        ids = array("i")
        async with self.pool.acquire() as conn, conn.transaction():
            async for chunk in repo.catalog_map_chunks(conn):
                names.extend([r[0] for r in chunk])
                ids.extend([r[1] for r in chunk])
        # set_catalog rescans the folder: keep that off the event loop.
        await asyncio.to_thread(self.images.set_catalog, zip(names, ids, strict=True))
        del names, ids
        trim_heap()
        self.catalog.map_loads += 1

    async def _map_reloader(self) -> None:
        while True:
            await self._map_dirty.wait()
            self._map_dirty.clear()
            try:
                await self._load_map()
                self.tasks["catalog-map-reloader"].ok()
            except TRANSIENT_DB_ERRORS as exc:
                self.tasks["catalog-map-reloader"].failed(exc)
                log.warning("catalog map reload failed, will retry: %s", exc)
                await asyncio.sleep(0.5)
                self._map_dirty.set()
            except Exception:
                self._map_dirty.set()  # the restarted loop must still do this reload
                raise

    async def _index_updater(self) -> None:
        # One catch-up at a time: notifications arriving meanwhile set the event again, and the next round
        # reads every change since the version the index reflects (many notifications, one catch-up).
        live = self.live
        assert live is not None
        while True:
            await self._live_dirty.wait()
            self._live_dirty.clear()
            try:
                await live.catch_up(await self._index_connection())
                self.tasks["catalog-index"].ok()
            except TRANSIENT_DB_ERRORS as exc:
                await self._drop_index_connection()
                self.tasks["catalog-index"].failed(exc)
                log.warning("catalog index catch-up failed, will retry: %s", exc)
                await asyncio.sleep(0.5)
                self._live_dirty.set()
            except Exception:
                self._live_dirty.set()  # the restarted loop must still catch up
                raise

    async def _index_connection(self) -> asyncpg.Connection:
        # Not a pool connection: under load the pool's queue holds every request in arrival order, and a
        # catch-up that requests wait on (fresh_index) must not wait behind them.
        conn = self._index_conn
        if conn is None or conn.is_closed():
            conn = self._index_conn = await asyncpg.connect(
                self.dsn,
                timeout=5,
                command_timeout=self.settings.DB_COMMAND_TIMEOUT_S,
                server_settings={"application_name": "catalog-index", "jit": "off"},
            )
        return conn

    async def _drop_index_connection(self) -> None:
        conn, self._index_conn = self._index_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 1)

    async def _image_refresher(self) -> None:
        interval = self.settings.IMAGE_REFRESH_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.images.refresh)  # any error: logged and restarted by _supervised
            self.tasks["image-refresher"].ok()
