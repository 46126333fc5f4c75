"""Page cache that is never stale: L1 per process, L2 in Redis, keys that embed what the answer depends on.

A key is `generation | route and normalised inputs [| stamp]`. Answers from SQL have the generation
`catalog epoch:version:image fingerprint`: a committed change bumps the version (database triggers +
LISTEN/NOTIFY, see resources.py), so old entries become unreachable. Answers from the in-memory index
(catalog/live.py) have the generation `epoch:structure version:image fingerprint`, which product writes do
not change, and a stamp of the ids they show, their row versions and their counts: a write reaches exactly
the keys of the answers it changes. Nothing is ever scanned or deleted by pattern; L1 drops unreachable
entries as its least recently used.

Each entry holds the gzip bytes (compressed once per fill, never per request; zstd and br once per process on
first use; the JSON bytes only for pages too small to compress, see Page) and a strong ETag, or a "not found"
marker (a scan of unknown ids costs one query per id and version, not one per request). Concurrent misses on
one key are filled once: per process with a shared future, across processes and instances with a Redis lock
carrying an owner token (only its owner releases it) that the others wait on for as long as a fill may take,
taking it over if the owner vanished. Pages nobody else is likely to ask for (deep pages, empty results) stay
in L1: Redis holds only what is shared. Redis trouble never fails a request: each call has a short timeout,
then L2 is skipped (logged once, reported on /ready) and retried after a pause.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.encoding import CODINGS, GZIP_FLAVOUR, MIN_BYTES, encode, gunzip, gzip_bytes, strong_etag

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger("server.cache")

_HEADER = struct.Struct("!BHIII")  # format version, status, len(stored identity), len(gzip), identity length
# 2 held zlib level 6 gzip bytes; 3 (zlib-ng level 4) and 4 (the stdlib fallback) held the identity body
# beside its gzip; 5 and 6 (the same two flavours) leave the identity out when there is a gzip. Different
# numbers keep instances that make different bytes from serving each other's under one strong ETag.
_FORMAT = 4 + GZIP_FLAVOUR
_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
# Delete the fill lock only if we still own it (our token): a lock that expired and was taken by another
# process must not be freed by the first owner finishing late.
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(slots=True, frozen=True)
class Made:
    """What a fill produced: the body, its status (200, or 404 for "no such thing"), and whether other
    processes are likely to want it (False keeps it out of Redis)."""

    body: bytes
    status: int = 200
    shared: bool = True


@dataclass(slots=True, eq=False)
class Page:
    """One cached response body with its encodings and ETag (or a 404 marker with an empty body).

    gzip is made with the page (nearly every client takes it, and it travels through Redis with the body);
    zstd and br are made in this process on the first request that picks them and kept with the page, so
    no fill pays brotli for clients that never ask. `size` reserves their room up front (5/4 of the gzip
    size each: they are within a few % of gzip on our JSON; one that would not fit is not kept, and the
    negotiation falls back to the next coding), so the L1 byte bound holds however many are made later.
    Compression never awaits: two requests of one process cannot both make the same representation.

    A compressed page keeps only its encodings once it is cached (`slim`), not the identity bytes, which
    are 7-10 times the gzip on our JSON: L1 holds 3-4 times as many pages in the same bytes, Redis too,
    and the rare client that takes no coding gets the gzip inflated (`body`, ~20 µs for 36 KB).
    """

    raw: bytes | None  # the identity bytes, None once slim
    gzip: bytes | None
    etag: str
    status: int = 200
    length: int = -1  # of the identity bytes (from `raw` when not given)
    # coding -> bytes, or None once it proved not worth keeping; only zstd/br, only for compressed pages.
    # Made on the first such request (most pages are only ever sent as gzip: one object fewer for the
    # garbage collector to walk per cached page).
    lazy: dict[str, bytes | None] | None = field(default=None, repr=False)
    _offer: tuple[str, ...] = field(default=(), init=False, repr=False)  # codings(), kept current

    def __post_init__(self) -> None:
        self._offer = CODINGS if self.gzip is not None else ()
        if self.length < 0:
            self.length = len(self.body)

    @classmethod
    def build(cls, body: bytes, status: int = 200) -> Page:
        """Compress (when worth it) and tag a freshly made body."""
        gz = gzip_bytes(body) if len(body) >= MIN_BYTES else None
        return cls(body, gz, strong_etag(body), status, len(body))

    @property
    def body(self) -> bytes:
        """The identity bytes (inflated from the gzip when the page is slim)."""
        raw = self.raw
        if raw is not None:
            return raw
        assert self.gzip is not None
        return gunzip(self.gzip)

    def slim(self) -> None:
        """Drop the identity bytes if the gzip can give them back (before the page is cached)."""
        if self.gzip is not None:
            self.raw = None

    def codings(self) -> tuple[str, ...]:
        """The codings this page can be sent in, in server preference order."""
        return self._offer

    def encoded(self, coding: str) -> bytes | None:
        """The body in `coding` (made on first use and kept), or None if it is not worth sending."""
        if coding == "gzip":
            return self.gzip
        gz = self.gzip
        if gz is None:
            return None
        lazy = self.lazy
        if lazy is None:
            lazy = self.lazy = {}
        try:
            return lazy[coding]
        except KeyError:
            out = encode(self.body, coding)
            kept = out if len(out) <= _room(gz) else None
            lazy[coding] = kept
            if kept is None:
                self._offer = tuple(c for c in self._offer if c != coding)
            return kept

    def pack(self) -> bytes:
        """Bytes for Redis: header, identity (only without a gzip), gzip, etag (lazy encodings stay here)."""
        gz = self.gzip or b""
        raw = b"" if gz else self.body
        header = _HEADER.pack(_FORMAT, self.status, len(raw), len(gz), self.length)
        return header + raw + gz + self.etag.encode()

    @classmethod
    def unpack(cls, raw: bytes) -> Page | None:
        """Inverse of pack (a slim page when it has a gzip); None for anything malformed (a miss)."""
        if len(raw) < _HEADER.size:
            return None
        version, status, n_raw, n_gz, length = _HEADER.unpack_from(raw)
        start = _HEADER.size
        if version != _FORMAT or len(raw) < start + n_raw + n_gz + 2 or (n_raw and n_gz):
            return None
        if not n_gz and n_raw != length:
            return None
        body = raw[start : start + n_raw] if not n_gz else None
        gz = raw[start + n_raw : start + n_raw + n_gz] or None
        etag = raw[start + n_raw + n_gz :].decode("ascii", "replace")
        return cls(body, gz, etag, status, length)

    @property
    def size(self) -> int:
        """Bytes held, counting the room reserved for the lazy encodings (constant once slim)."""
        gz = self.gzip
        raw = self.raw
        return (
            (len(raw) if raw is not None else 0)
            + (len(gz) + _room(gz) * (len(CODINGS) - 1) if gz else 0)
            + 64
        )


def _room(gz: bytes) -> int:
    """The bytes reserved for each lazy encoding (zstd, br) of a page whose gzip is `gz`."""
    return len(gz) * 5 // 4


@dataclass(slots=True)
class CacheStats:
    """Counters per level, for /ready and later /metrics."""

    l1_hits: int = 0
    l1_misses: int = 0
    l2_hits: int = 0
    l2_misses: int = 0
    l2_errors: int = 0
    fills: int = 0
    waits: int = 0  # requests that waited for another request's fill instead of querying
    l1_entries: int = 0
    l1_bytes: int = 0
    degraded: bool = False
    generation: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class RouteCounts:
    """One route's share of the lookups (/metrics page_cache_*{route}); CacheStats keeps the totals."""

    l1_hits: int = 0
    l1_misses: int = 0
    l2_hits: int = 0
    l2_misses: int = 0
    fills: int = 0
    waits: int = 0


MAX_ROUTES = 64  # routes counted apart (bounded: names come from code, never from input)


@dataclass(slots=True)
class CacheConfig:
    """Bounds and timings (from settings)."""

    enabled: bool = True
    l1_max_entries: int = 2048
    l1_max_bytes: int = 64 * 1024 * 1024
    l2_ttl_s: int = 300
    key_prefix: str = "catalog:"
    # A fill may take as long as a statement may run: the lock lives that long, and waiters wait that long
    # (a waiter that gave up earlier would query too, and a herd would reach the database).
    lock_ttl_ms: int = 11_000
    redis_retry_s: float = 1.0
    not_found_ttl_s: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> CacheConfig:
        """Bounds and timings of this service's settings."""
        return cls(
            enabled=settings.CACHE_ENABLED,
            l1_max_entries=settings.CACHE_L1_MAX_ENTRIES,
            l1_max_bytes=settings.CACHE_L1_MAX_MB * 1024 * 1024,
            l2_ttl_s=settings.CACHE_L2_TTL_S,
            key_prefix=settings.REDIS_KEY_PREFIX,
            lock_ttl_ms=int(settings.DB_COMMAND_TIMEOUT_S * 1000) + 1000,
            not_found_ttl_s=settings.CACHE_NOT_FOUND_TTL_S,
        )


class PageCache:
    """get_or_fill(route, inputs, generation, fill) -> Page, through L1, L2 and single flight."""

    def __init__(
        self,
        config: CacheConfig,
        redis: aioredis.Redis | None,
        redis_suspect: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.redis = redis if config.enabled else None
        # Another user of the same Redis (the rate limiter) already found it unreachable: skip L2 at once
        # instead of paying a second timeout in the same request.
        self._suspect = redis_suspect or (lambda: False)
        self.stats = CacheStats()
        self.routes: dict[str, RouteCounts] = {}
        self._l1: OrderedDict[str, Page] = OrderedDict()
        self._l1_bytes = 0
        self._inflight: dict[str, asyncio.Future[Page]] = {}
        self._redis_down_until = 0.0
        self._totals: dict[str, int] = {}
        self._totals_generation = ""

    def total(self, generation: str, filter_key: str) -> int | None:
        """The remembered row count of a list filter in this generation (None: unknown, count it)."""
        if generation != self._totals_generation:
            return None
        return self._totals.get(filter_key)

    def remember_total(self, generation: str, filter_key: str, total: int) -> None:
        """Keep a filter's count for the other pages and sorts of this generation (per process)."""
        if not self.config.enabled:
            return
        if generation != self._totals_generation:
            self._totals.clear()
            self._totals_generation = generation
        if len(self._totals) >= self.config.l1_max_entries:
            self._totals.clear()
        self._totals[filter_key] = total

    def snapshot(self) -> dict[str, Any]:
        """Counters and sizes, for /ready (and /metrics later)."""
        self.stats.l1_entries, self.stats.l1_bytes = len(self._l1), self._l1_bytes
        return self.stats.as_dict()

    # -- L1 -------------------------------------------------------------------------------------

    def _l1_put(self, key: str, page: Page) -> None:
        page.slim()
        old = self._l1.pop(key, None)
        if old is not None:
            self._l1_bytes -= old.size
        if page.size > self.config.l1_max_bytes // 8:
            return
        self._l1[key] = page
        self._l1_bytes += page.size
        while len(self._l1) > self.config.l1_max_entries or self._l1_bytes > self.config.l1_max_bytes:
            _, evicted = self._l1.popitem(last=False)
            self._l1_bytes -= evicted.size

    # -- L2 -------------------------------------------------------------------------------------

    def _redis_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._redis_down_until and not self._suspect()

    def _redis_failed(self, exc: BaseException) -> None:
        self.stats.l2_errors += 1
        self._redis_down_until = time.monotonic() + self.config.redis_retry_s
        if not self.stats.degraded:
            self.stats.degraded = True
            log.warning("Redis unavailable, serving from L1 and the database: %s", type(exc).__name__)

    def redis_reachable(self) -> None:
        """Someone (the readiness probe) reached Redis: stop skipping L2 now."""
        self._redis_down_until = 0.0
        self._redis_ok()

    def _redis_ok(self) -> None:
        if self.stats.degraded:
            self.stats.degraded = False
            log.info("Redis is back; shared page cache in use again")

    async def _l2_get(self, key: str) -> Page | None:
        if not self._redis_usable():
            return None
        assert self.redis is not None
        try:
            raw = await self.redis.get(self.config.key_prefix + "page:" + key)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return None
        self._redis_ok()
        return Page.unpack(raw) if isinstance(raw, bytes) else None

    async def _l2_put(self, key: str, page: Page) -> None:
        if not self._redis_usable():
            return
        assert self.redis is not None
        ttl = self.config.l2_ttl_s if page.status == 200 else min(self.config.not_found_ttl_s, 600)
        try:
            await self.redis.set(self.config.key_prefix + "page:" + key, page.pack(), ex=ttl)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)

    async def _lock(self, key: str, token: bytes) -> bool | None:
        """True: we fill. False: someone else is filling. None: Redis unusable (fill locally)."""
        if not self._redis_usable():
            return None
        assert self.redis is not None
        try:
            got = await self.redis.set(
                self.config.key_prefix + "fill:" + key, token, nx=True, px=self.config.lock_ttl_ms
            )
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return None
        return bool(got)

    async def _locked(self, key: str) -> bool:
        """Whether someone holds the fill lock of `key` (False when Redis cannot tell)."""
        if not self._redis_usable():
            return False
        assert self.redis is not None
        try:
            return bool(await self.redis.exists(self.config.key_prefix + "fill:" + key))
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return False

    async def _unlock(self, key: str, token: bytes) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.eval(_UNLOCK, 1, self.config.key_prefix + "fill:" + key, token)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)

    # -- the public path ------------------------------------------------------------------------

    def route_counts(self, route: str) -> RouteCounts:
        """The counters of `route` (a route template named by code)."""
        counts = self.routes.get(route)
        if counts is None:
            if len(self.routes) >= MAX_ROUTES:
                route = "other"
            counts = self.routes.setdefault(route, RouteCounts())
        return counts

    def peek(self, key: str, generation: str, counts: RouteCounts | None = None) -> Page | None:
        """L1 only, no await: the hot path of a cached hit."""
        # Every key embeds its generation: entries of older ones are never asked for again and leave L1 as
        # its least recently used (two kinds of generation take turns here: the catalog version's and the
        # index's, so emptying L1 whenever the generation differs would empty it at every turn).
        self.stats.generation = generation
        page = self._l1.get(key)
        if page is not None:
            self._l1.move_to_end(key)
            self.stats.l1_hits += 1
            if counts is not None:
                counts.l1_hits += 1
        return page

    async def get_or_fill(
        self,
        key: str,
        generation: Callable[[], str],
        fill: Callable[[], Awaitable[Made]],
        *,
        shared: bool = True,
        route: str = "other",
    ) -> Page:
        """The page for `key` in the current generation, made with `fill()` at most once per cluster.

        `shared=False` (or a fill that says so) keeps the page in this process only. `generation()` is read
        before and after the fill: a page made while it changed is served but not stored (the image
        fingerprint can return to an earlier value, so a page made across a change could otherwise be
        found again under the earlier key). `route` names the counters of /metrics.
        """
        counts = self.routes.get(route) or self.route_counts(route)
        if not self.config.enabled:
            self.stats.fills += 1
            counts.fills += 1
            made = await fill()
            return Page.build(made.body, made.status)
        gen = generation()
        full_key = f"{gen}|{key}"
        page = self.peek(full_key, gen, counts)
        if page is not None:
            return page
        self.stats.l1_misses += 1
        counts.l1_misses += 1
        pending = self._inflight.get(full_key)
        if pending is not None:
            self.stats.waits += 1
            counts.waits += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[Page] = asyncio.get_running_loop().create_future()
        self._inflight[full_key] = future
        try:
            if shared:
                page = await self._fill_shared(full_key, fill, lambda: generation() == gen, counts)
            else:
                page = await self._fill_local(fill, counts)
            if generation() == gen:
                self._l1_put(full_key, page)
            future.set_result(page)
            return page
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must log it
            raise
        finally:
            del self._inflight[full_key]

    async def _fill_local(self, fill: Callable[[], Awaitable[Made]], counts: RouteCounts) -> Page:
        self.stats.fills += 1
        counts.fills += 1
        made = await fill()
        return Page.build(made.body, made.status)

    async def _fill_shared(
        self,
        key: str,
        fill: Callable[[], Awaitable[Made]],
        still_current: Callable[[], bool],
        counts: RouteCounts,
    ) -> Page:
        page = await self._l2_get(key)
        if page is not None:
            self.stats.l2_hits += 1
            counts.l2_hits += 1
            return page
        self.stats.l2_misses += 1
        counts.l2_misses += 1
        token = secrets.token_bytes(12)
        locked = await self._lock(key, token)
        if locked is False:
            # Another process or instance is filling: wait for its result in L2 as long as its lock may
            # live; if the lock goes away without a page (its owner failed or died), take over.
            self.stats.waits += 1
            counts.waits += 1
            deadline = time.monotonic() + self.config.lock_ttl_ms / 1000
            delay = 0.002
            while time.monotonic() < deadline and self._redis_usable():
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.05)
                page = await self._l2_get(key)
                if page is not None:
                    self.stats.l2_hits += 1
                    counts.l2_hits += 1
                    return page
                if not await self._locked(key):
                    locked = await self._lock(key, token)
                    if locked:
                        break
        if locked:
            # The previous holder may have stored the page between our miss and our lock.
            page = await self._l2_get(key)
            if page is not None:
                await self._unlock(key, token)
                self.stats.l2_hits += 1
                counts.l2_hits += 1
                return page
        try:
            self.stats.fills += 1
            counts.fills += 1
            made = await fill()
            page = Page.build(made.body, made.status)
            if made.shared and still_current():
                await self._l2_put(key, page)
            return page
        finally:
            if locked:
                await self._unlock(key, token)
