"""Per-process resources, made in Robyn's start-up handler (never at import) and closed at shutdown.

Each process owns: the asyncpg pool, a Redis client, the page cache, the rate limiter, the ImageIndex (with a
background refresher) and the catalog feed (server/catalog/feed.py: LISTEN, catalog version, image map, list
index), and supervises their background loops (restarted with backoff, shown on /ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from core_ext import USING_COMPILED, ImageIndex
from server.cache import CacheConfig, PageCache
from server.catalog.feed import CatalogFeed
from server.catalog.live import LiveCatalog
from server.db.pool import ServicePool, create_pool
from server.ratelimit import RateLimiter
from server.settings import Settings

log = logging.getLogger("server.resources")


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
        self.feed = CatalogFeed(settings, self.images)
        self.catalog = self.feed.state
        self.started_at = time.time()
        self.pid = os.getpid()
        self.using_compiled = USING_COMPILED
        self.cache = PageCache(CacheConfig(enabled=False), None)  # replaced in start()
        self.limiter = RateLimiter(None, enabled=False)  # replaced in start()
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[Any]] = set()  # one-shot work (a sync run): cancelled at close
        self.tasks: dict[str, TaskHealth] = {}
        self._closing = False

    @property
    def live(self) -> LiveCatalog | None:
        """The in-memory product list (CATALOG_INDEX); None when off."""
        return self.feed.live

    @property
    def generation(self) -> str:
        """What every page made from SQL depends on: database epoch, catalog version, set of images."""
        return self.feed.generation

    def current_generation(self) -> str:
        """`generation`, as a callable for the page cache."""
        return self.feed.generation

    def index_generation(self) -> str:
        """What every answer computed from the index depends on beyond its stamp (CatalogFeed)."""
        return self.feed.index_generation()

    async def fresh_index(self) -> LiveCatalog | None:
        """The index once it reflects every change this process heard of, or None: answer from SQL."""
        return await self.feed.fresh_index()

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
        feed, pool = self.feed, self.pool
        await feed.start(pool)
        if feed.live is not None:
            self._start_task("catalog-index", lambda: feed.index_updater(self.tasks["catalog-index"]))
        self._start_task("listener-watchdog", lambda: feed.listener_watchdog(self.tasks["listener-watchdog"]))
        self._start_task(
            "catalog-map-reloader", lambda: feed.map_reloader(pool, self.tasks["catalog-map-reloader"])
        )
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
        await self.feed.close(budget_s / 2)
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

    # -- images -------------------------------------------------------------------------------------

    async def _image_refresher(self) -> None:
        interval = self.settings.IMAGE_REFRESH_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.images.refresh)  # any error: logged and restarted by _supervised
            self.tasks["image-refresher"].ok()
