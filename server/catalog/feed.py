"""Catalog freshness in one process: the LISTEN connection, the (epoch, version) it keeps current, the image
index's product map and the in-memory list index, each kept up to date from the database's change feed.

Every committed catalog write bumps `catalog_state.version` and notifies channel `catalog` in its own
transaction (migrations 0001/0005). The listener takes each new version at once; its watchdog reconnects a
lost connection and re-reads the state, so a notification lost while it was down never leaves this process
behind. A change to which products exist or to their zoho_item_id updates the image index's
`{zoho_item_id: id}` map: only the products the change feed names since the version the map reflects
(ImageIndex.update_catalog looks at their files alone), the whole map only when the feed cannot say (a gap,
a TRUNCATE, another database). Every change wakes the list index's catch-up (server/catalog/live.py), one
at a time, on a connection of its own.

Resources (server/resources.py) owns the connections it hands in and runs the loops under its supervision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from core_ext import ImageIndex
from server.catalog import repo
from server.catalog.hits import SearchHits
from server.catalog.live import ANSWER_MEMO_ENTRIES, ANSWER_MEMO_WHOLE_ENTRIES, LiveCatalog, trim_heap
from server.catalog.rows import fetch_items
from server.db.pool import DATABASE_UNAVAILABLE, ServicePool
from server.metrics.registry import Histogram
from server.settings import Settings

log = logging.getLogger("server.catalog.feed")

CHANNEL = "catalog"
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, asyncpg.PostgresError)


class Health(Protocol):
    """How a loop reports to its supervisor (resources.TaskHealth)."""

    def ok(self) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


@dataclass(slots=True)
class CatalogState:
    """What this process knows of the catalog: the database epoch and the last version seen."""

    epoch: str = ""
    version: int = 0
    listening: bool = False
    reconnects: int = 0
    map_loads: int = 0  # whole image maps loaded
    map_updates: int = 0  # image map catch-ups (only the changed products)
    last_change_monotonic: float = field(default_factory=time.monotonic)


# Changes this close together are a burst (a sync's batches, a run of orders): while one goes on, one request
# at a time waits for each catch-up (the first request after a write, often its writer's read, sees it), and
# the others are answered from the index as of the version it has applied, instead of all waiting for every
# catch-up. Read-your-writes is then not guaranteed to a client whose read finds another request waiting.
BURST_S = 2.0
# List items fetched again after one catch-up at most (CatalogFeed._refill): a sync batch is 200 products.
REFILL_MAX = 1000


@dataclass(slots=True)
class Behind:
    """Since when the list index is behind the notified version, and what requests did meanwhile (/ready)."""

    since: float = 0.0  # monotonic time of the first change the index has not applied (or earlier)
    burst: bool = False  # that change came within BURST_S of the one before
    plain: bool = True  # a change the index has not applied is not bulk (0014_bulk_changes.sql)
    waiting: int = 0  # requests waiting for the catch-up now
    served: int = 0  # requests answered from the index as of an older version (a burst)
    waits: int = 0  # requests that waited for a catch-up
    sql: int = 0  # of those, answered from SQL (the catch-up took longer than CATALOG_INDEX_WAIT_MS)

    def start(self, now: float, burst: bool, bulk: bool) -> None:
        self.since, self.burst, self.plain = now, burst, not bulk

    def report(self) -> dict[str, int]:
        return {"served_behind": self.served, "waits": self.waits, "waits_to_sql": self.sql}


class CatalogFeed:
    """The catalog state, the LISTEN connection and what follows it (image map, list index)."""

    def __init__(self, settings: Settings, images: ImageIndex) -> None:
        self.settings = settings
        self.images = images
        self.state = CatalogState()
        # The in-memory product list (CATALOG_INDEX); None when off.
        self.live: LiveCatalog | None = None
        self._dsn = "" if settings.DATABASE_URL is None else settings.DATABASE_URL.get_secret_value()
        self._listen_conn: asyncpg.Connection | None = None
        self._index_conn: asyncpg.Connection | None = None  # the catch-ups' own connection
        self._map_dirty = asyncio.Event()
        self._map_at: tuple[str, int] = ("", -1)  # the (epoch, version) the image map reflects
        self._live_dirty = asyncio.Event()
        self.behind = Behind()
        self._closing = False
        # Each change: committed -> applied to the list index, seconds (/metrics catalog_change_lag_seconds).
        self.lag = Histogram.of("catalog_change_lag_seconds")

    # -- what requests read -------------------------------------------------------------------------

    @property
    def generation(self) -> str:
        """What every page made from SQL depends on: database epoch, catalog version, set of images."""
        c = self.state
        return f"{c.epoch}:{c.version}:{self.images.fingerprint}"

    def index_generation(self) -> str:
        """What every answer computed from the index depends on beyond its stamp (LiveCatalog.stamp):
        database epoch, the index's structure version, set of images. Product writes do not change it."""
        live = self.live
        assert live is not None
        return f"{live.epoch}:i{live.structure}:{self.images.fingerprint}"

    async def fresh_index(self) -> LiveCatalog | None:
        """The index once it reflects every change this process has heard of (waiting at most
        CATALOG_INDEX_WAIT_MS for its catch-up); None when it is off or still behind: answer from SQL.
        While changes keep coming (a burst), one request at a time waits so; the others are answered
        meanwhile from the index as of the version it has applied (exact for that version), for at most
        CATALOG_INDEX_STALE_MS after the first change it has not applied. When every change it has not
        applied is bulk (the sync's: nobody reads right after them), no request waits within that bound."""
        live, c = self.live, self.state
        if live is None:
            return None
        if live.epoch == c.epoch and live.version >= c.version:
            return live
        behind = self.behind
        if (
            (not behind.plain or (behind.waiting and behind.burst))
            and live.epoch == c.epoch
            and live.version >= 0
            and time.monotonic() - behind.since < self.settings.CATALOG_INDEX_STALE_MS / 1000
        ):
            behind.served += 1
            return live
        behind.waiting += 1
        try:
            ok = await live.wait_for(c.epoch, c.version, self.settings.CATALOG_INDEX_WAIT_MS / 1000)
        finally:
            behind.waiting -= 1
        behind.waits += 1
        behind.sql += not ok
        return live if ok else None

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self, pool: ServicePool) -> None:
        """Listen, load the image map and (CATALOG_INDEX) build the list index; the loops run after."""
        s = self.settings
        await self._connect_listener()
        await self.load_map(pool)
        if s.CATALOG_INDEX:
            self.live = LiveCatalog(
                s.CONSUMER_PRICE_LIST,
                hits=SearchHits(s.SEARCH_MEMO_ENTRIES, s.SEARCH_MEMO_IDS),
                row_store_bytes=s.ROW_STORE_MB * 1_048_576,
                # Stamps with the page cache on, whole answers (bigger) with it off (catalog/router.py).
                answer_entries=ANSWER_MEMO_ENTRIES if s.CACHE_ENABLED else ANSWER_MEMO_WHOLE_ENTRIES,
            )
            async with pool.acquire() as conn:
                await self.live.rebuild(conn)
            self._live_dirty.set()  # changes committed since the listener read the version

    async def close(self, budget_s: float) -> None:
        """Close the listener and the catch-ups' connection (the loops were cancelled before)."""
        self._closing = True
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listen_conn.close(), budget_s)
        await self._drop_index_connection()

    # -- LISTEN ---------------------------------------------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        version_text, _, topic = payload.partition(":")
        table, _, flag = topic.partition(":")
        bulk = flag == "bulk"
        with contextlib.suppress(ValueError):
            version = int(version_text)
            if version > self.state.version:
                now = time.monotonic()
                live = self.live
                if live is not None and live.version >= self.state.version:
                    # The index falls behind now: a burst when this change came soon after the one before.
                    self.behind.start(now, now - self.state.last_change_monotonic < BURST_S, bulk)
                elif not bulk:
                    self.behind.plain = True
                self.state.version = version
                self.state.last_change_monotonic = now
        if table in ("", "products"):
            self._map_dirty.set()
        self._live_dirty.set()

    def _on_terminated(self, _conn: Any) -> None:
        self.state.listening = False

    async def _connect_listener(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, timeout=5, server_settings={"application_name": "catalog-listen"}
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
        if epoch != self.state.epoch or version > self.state.version:
            self.state.epoch, self.state.version = epoch, version
            self.state.last_change_monotonic = time.monotonic()
        self._listen_conn = conn
        self.state.listening = True

    async def listener_watchdog(self, health: Health) -> None:
        """Reconnect a lost LISTEN connection (forever); then everything may have changed."""
        delay = 0.1
        while not self._closing:
            conn = self._listen_conn
            if conn is not None and not conn.is_closed() and self.state.listening:
                await asyncio.sleep(0.2)
                continue
            try:
                await self._connect_listener()
            except TRANSIENT_DB_ERRORS as exc:
                health.failed(exc)
                log.warning("LISTEN connection lost, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            health.ok()
            self.state.reconnects += 1
            self._map_dirty.set()  # products may have changed while we were away
            self._live_dirty.set()
            log.info("LISTEN connection re-established; catalog version %d", self.state.version)

    # -- the image index's product map ----------------------------------------------------------------

    async def load_map(self, pool: ServicePool) -> None:
        """Hand the image index the active products' {zoho_item_id: id}."""
        # Streamed into two flat sequences (no dict, no million records at once); the index keeps them
        # as one sorted arena of names.
        names: list[str] = []
        ids = array("i")
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            at = await repo.catalog_state(conn)
            async for chunk in repo.catalog_map_chunks(conn):
                names.extend([r[0] for r in chunk])
                ids.extend([r[1] for r in chunk])
        # set_catalog rescans the folder: keep that off the event loop.
        await asyncio.to_thread(self.images.set_catalog, zip(names, ids, strict=True))
        del names, ids
        trim_heap()
        self._map_at = at
        self.state.map_loads += 1

    async def update_map(self, pool: ServicePool) -> bool:
        """Apply to the image map the products changed since the version it reflects; False (nothing done)
        when the change feed cannot say which (then load_map)."""
        epoch, version = self._map_at
        if version < 0:
            return False
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            at = await repo.catalog_state(conn)
            changes = await repo.changes_since(conn, version) if at[0] == epoch else None
            if changes is None or any(ids is None for _, tbl, ids in changes if tbl == "products"):
                return False
            changed = sorted({i for _, tbl, ids in changes if tbl == "products" for i in ids or ()})
            rows = await repo.catalog_map_rows(conn, changed) if changed else []
        # Drop every changed product, add back the active ones: a deleted or deactivated product loses its
        # name, a renamed one its old name. In a thread: the compiled index merges the names (every name,
        # ~1 ms at 60,000) and looks at the changed ones' files without the GIL, so the event loop serves
        # meanwhile (it swaps in the new map whole; readers see the old one or the new one).
        await asyncio.to_thread(self.images.update_catalog, [(r[0], r[1]) for r in rows if r[2]], changed)
        self._map_at = at
        self.state.map_updates += 1
        return True

    async def map_reloader(self, pool: ServicePool, health: Health) -> None:
        """Reload the map whenever the set of products may have changed (forever)."""
        while True:
            await self._map_dirty.wait()
            self._map_dirty.clear()
            try:
                if not await self.update_map(pool):
                    await self.load_map(pool)
                health.ok()
            except TRANSIENT_DB_ERRORS as exc:
                health.failed(exc)
                log.warning("catalog map reload failed, will retry: %s", exc)
                await asyncio.sleep(0.5)
                self._map_dirty.set()
            except Exception:
                self._map_dirty.set()  # the restarted loop must still do this reload
                raise

    # -- the list index -------------------------------------------------------------------------------

    async def index_updater(self, health: Health) -> None:
        """Catch the list index up after each notification (forever)."""
        # One catch-up at a time: notifications arriving meanwhile set the event again, and the next round
        # reads every change since the version the index reflects (many notifications, one catch-up).
        live = self.live
        assert live is not None
        while True:
            await self._live_dirty.wait()
            self._live_dirty.clear()
            try:
                started = time.monotonic()
                conn = await self._index_connection()
                committed = await live.catch_up(conn)
                self._observe_lag(committed)
                if live.version < self.state.version:
                    # Still behind: the changes it has not applied were notified after it started (its
                    # snapshot holds every change committed before), so they are at most this old.
                    self.behind.since = started
                await self._refill(conn, live)
                health.ok()
            except TRANSIENT_DB_ERRORS as exc:
                await self._drop_index_connection()
                health.failed(exc)
                log.warning("catalog index catch-up failed, will retry: %s", exc)
                await asyncio.sleep(0.5)
                self._live_dirty.set()
            except Exception:
                self._live_dirty.set()  # the restarted loop must still catch up
                raise

    async def _refill(self, conn: asyncpg.Connection, live: LiveCatalog) -> None:
        """Fetch again the list items of the products the last catch-up changed or added (at most
        REFILL_MAX), after it, off the request path: while a sync writes, a page that shows them would
        otherwise fetch each by primary key (one query per page while PostgreSQL is busy with the sync)."""
        ids, live.refill = live.refill[-REFILL_MAX:], []
        if not ids:
            return
        store = live.items
        flags = self.images.has_many(ids)
        tags = live.row_tags(ids, flags)  # as of the catch-up: the rows read next are no older (page_items)
        s = self.settings
        made = await fetch_items(conn, s.CONSUMER_PRICE_LIST, s.PUBLIC_BASE_URL, ids, flags)
        if made is None:
            return  # deleted meanwhile: the next catch-up says so, requests fetch the others
        for pid, tag, item in zip(ids, tags, made, strict=True):
            store.put(pid, tag, item)
        live.refilled += len(ids)

    def _observe_lag(self, committed: repo.CommitTimes) -> None:
        # The commit times are the database's clock, `now` this host's: on another host the two must agree
        # (NTP keeps them within milliseconds); a clock behind the database's counts 0, not less.
        now = time.time()
        for at in committed:
            self.lag.observe(max(0.0, now - at))

    async def _index_connection(self) -> asyncpg.Connection:
        # Not a pool connection: under load the pool's queue holds every request in arrival order, and a
        # catch-up that requests wait on (fresh_index) must not wait behind them.
        conn = self._index_conn
        if conn is None or conn.is_closed():
            conn = self._index_conn = await asyncpg.connect(
                self._dsn,
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
