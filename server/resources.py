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
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from core_ext import USING_COMPILED, ImageIndex
from server.cache import CacheConfig, PageCache
from server.catalog import repo
from server.db.pool import create_pool
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


class Resources:
    """Everything a handler needs in this process; built by `start`, released by `close`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool = None  # set in start()
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
        self._map_dirty = asyncio.Event()
        self._closing = False

    @property
    def generation(self) -> str:
        """What every cached page depends on: database epoch, catalog version, set of images."""
        c = self.catalog
        return f"{c.epoch}:{c.version}:{self.images.fingerprint}"

    def current_generation(self) -> str:
        """`generation`, as a callable for the page cache."""
        return self.generation

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
        self.limiter = RateLimiter(None, processes=s.PROCESSES, enabled=False)
        if s.REDIS_URL is not None and s.RATE_LIMIT_ENABLED:
            self.limiter = RateLimiter.from_url(
                s.REDIS_URL.get_secret_value(),
                processes=s.PROCESSES,
                prefix=s.REDIS_KEY_PREFIX,
                timeout_s=s.RATE_LIMIT_REDIS_TIMEOUT_MS / 1000,
            )
        elif s.RATE_LIMIT_ENABLED:
            self.limiter = RateLimiter(None, processes=s.PROCESSES)  # local limits only
        limiter = self.limiter
        self.cache = PageCache(
            CacheConfig.from_settings(s), self.redis, redis_suspect=lambda: limiter.degraded
        )
        await self._connect_listener()
        await self._load_map()
        self._tasks = [
            asyncio.create_task(self._listener_watchdog(), name="listener-watchdog"),
            asyncio.create_task(self._map_reloader(), name="catalog-map-reloader"),
            asyncio.create_task(self._image_refresher(), name="image-refresher"),
        ]

    async def close(self) -> None:
        """Stop background tasks and close every connection."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listen_conn.close(), 2)
        with contextlib.suppress(Exception):
            await self.limiter.aclose()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 3)

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

    def _on_terminated(self, _conn: Any) -> None:
        self.catalog.listening = False

    async def _connect_listener(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, timeout=5, server_settings={"application_name": "catalog-listen"}
        )
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_terminated)
        # Read the state only after LISTEN is active: a change committed in between is then either in
        # the state we read or in a notification we will get.
        epoch, version = await repo.catalog_state(conn)
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
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("LISTEN connection lost, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self.catalog.reconnects += 1
            self._map_dirty.set()  # products may have changed while we were away
            log.info("LISTEN connection re-established; catalog version %d", self.catalog.version)

    # -- catalog map and image index --------------------------------------------------------------

    async def _load_map(self) -> None:
        async with self.pool.acquire() as conn:
            mapping = await repo.catalog_map(conn)
        # set_catalog rescans the folder: keep that off the event loop.
        await asyncio.to_thread(self.images.set_catalog, mapping)
        self.catalog.map_loads += 1

    async def _map_reloader(self) -> None:
        while True:
            await self._map_dirty.wait()
            self._map_dirty.clear()
            try:
                await self._load_map()
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("catalog map reload failed, will retry: %s", exc)
                await asyncio.sleep(0.5)
                self._map_dirty.set()

    async def _image_refresher(self) -> None:
        interval = self.settings.IMAGE_REFRESH_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.images.refresh)
            except OSError as exc:  # pragma: no cover - refresh treats a missing folder as empty
                log.warning("image index refresh failed: %s", exc)
