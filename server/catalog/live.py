"""The consumer product list in memory: a core_ext.CatalogIndex kept exact from the change feed.

Built once from SQL (repo.index_*), then each catch-up reads the changes after the version it reflects
(repo.changes_since) and applies only those: changed products are refetched in one query, category
changes reload the (small) tree, and the name ranks are reloaded only when a name changed or a product
appeared. A gap in the feed, a TRUNCATE, a price-list change or another database rebuilds everything.
Each catch-up reads in one REPEATABLE READ snapshot, so the index is exactly the catalog at `version`.

No name text is kept: SQL gives each product's name rank and a 64-bit hash of its name, held in arrays
indexed by product id (16 bytes a product: dicts of names and ranks, and a load holding every row, left
RSS at ~650 MB after a build at 1M products), and a full load streams its rows into typed arrays.
"""

from __future__ import annotations

import ctypes
import logging
import time
from array import array
from collections.abc import Callable, MutableSequence, Sequence
from operator import itemgetter
from typing import Any

import asyncpg

from core_ext import CatalogIndex
from server.catalog import repo

log = logging.getLogger("server.catalog.live")

# glibc keeps the heap a full load freed (its mmap threshold grows with each large block freed): at 1M
# products ~40 MB stayed resident after the build, and more after the start's other loads. malloc_trim
# gives it back. Absent elsewhere (musl, macOS): nothing to do.
_malloc_trim: Callable[[int], int] | None
try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # pragma: no cover - depends on the C library
    _malloc_trim = None


def _scatter(target: array[int], ids: Sequence[int], values: Sequence[int]) -> array[int]:
    """Set target[id] = value for each pair, growing the array (zeros) to fit; returns it."""
    top = max(ids, default=-1)
    if top >= len(target):
        target.frombytes(bytes((top + 1 - len(target)) * target.itemsize))
    for i, v in zip(ids, values, strict=True):
        target[i] = v
    return target


def _by_id(ids: array[int], values: array[int]) -> array[int]:
    """An array with a[id] = value, from ids in ascending order (a full load)."""
    if ids and ids[-1] - ids[0] == len(ids) - 1:  # consecutive ids: one copy
        return array("q", bytes(ids[0] * 8)) + values
    return _scatter(array("q"), ids, values)


def _columns(chunk: Sequence[asyncpg.Record], columns: Sequence[MutableSequence[Any]]) -> None:
    # One C-level pass per column (2.5x faster than transposing the records with zip(*chunk)).
    for k, column in enumerate(columns):
        column.extend(map(itemgetter(k), chunk))


class LiveCatalog:
    """The index, the (epoch, version) it reflects, and counters for /ready."""

    def __init__(self, price_list: str) -> None:
        self.price_list = price_list
        self.index = CatalogIndex()
        self.epoch = ""
        self.version = -1  # nothing reflected yet: never equal to a real version
        # Name rank and name hash of every product, indexed by product id (ids are dense, as in the
        # index). A changed product whose hash differs was renamed (a different name with the same 64-bit
        # hash would go unnoticed: a 2**-64 chance per rename): a rename or a new product reloads the
        # ranks; any other change upserts the product with the rank it has.
        self._ranks = array("q")
        self._hashes = array("q")
        self.rebuilds = 0
        self.applied = 0  # changes applied incrementally
        self.rank_loads = 0
        self.category_loads = 0
        self.served = 0  # pages answered from the index

    def ready_for(self, epoch: str, version: int) -> bool:
        """True when the index is exactly the catalog at (epoch, version)."""
        return self.version == version and self.epoch == epoch

    def report(self) -> dict[str, Any]:
        """The index's line in /ready."""
        return {
            "version": self.version,
            "products": len(self.index),
            "active": self.index.active_count,
            "memory_bytes": self.index.memory_bytes,
            "rebuilds": self.rebuilds,
            "applied": self.applied,
            "rank_loads": self.rank_loads,
            "category_loads": self.category_loads,
            "served": self.served,
        }

    async def rebuild(self, conn: asyncpg.Connection) -> None:
        """Load everything from one snapshot into a fresh index, then swap it in."""
        started = time.perf_counter()
        loaded, ranked = await self._build(conn)
        if _malloc_trim is not None:
            _malloc_trim(0)  # the load's columns are garbage now
        done = time.perf_counter()
        log.info(
            "catalog index built: %d products in %.2f s (columns %.2f s, name ranks %.2f s, build %.2f s)",
            len(self.index),
            done - started,
            loaded - started,
            ranked - loaded,
            done - ranked,
        )

    async def _build(self, conn: asyncpg.Connection) -> tuple[float, float]:
        # Returns when the columns and the name ranks were loaded (perf_counter).
        ids, stocks, created, hashes = array("q"), array("q"), array("q"), array("q")
        categories: list[int | None] = []
        prices: list[int | None] = []
        active: list[bool] = []
        columns: tuple[MutableSequence[Any], ...] = (ids, categories, prices, stocks, created, active, hashes)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            epoch, version = await repo.catalog_state(conn)
            cats = await repo.index_categories(conn)
            async for chunk in repo.index_product_chunks(conn, self.price_list):
                _columns(chunk, columns)
            loaded = time.perf_counter()
            ranks = _scatter(array("q"), *await _name_ranks(conn))
        ranked = time.perf_counter()
        index = CatalogIndex()
        index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
        index.build(ids, categories, prices, stocks, created, [ranks[i] for i in ids], active)
        self.index, self.epoch, self.version = index, epoch, version
        self._ranks, self._hashes = ranks, _by_id(ids, hashes)
        self.rebuilds += 1
        return loaded, ranked

    async def catch_up(self, conn: asyncpg.Connection) -> None:
        """Apply every change after `version` (a full rebuild only when the feed cannot say what changed)."""
        if self.version < 0:
            await self.rebuild(conn)
            return
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            epoch, current = await repo.catalog_state(conn)
            changes = await repo.changes_since(conn, self.version) if epoch == self.epoch else None
            if changes is None or any(ids is None or tbl == "price_lists" for _, tbl, ids in changes):
                rebuild = True
            else:
                rebuild, count = False, len(changes)
                product_ids = sorted(
                    {i for _, tbl, ids in changes if tbl in ("products", "product_prices") for i in ids or ()}
                )
                categories_changed = any(tbl == "categories" for _, tbl, _ in changes)
                cats = await repo.index_categories(conn) if categories_changed else None
                rows = await repo.index_products(conn, self.price_list, product_ids) if product_ids else []
                renamed = any(r[0] not in self.index or self._hashes[r[0]] != r[6] for r in rows)
                ranks = await _name_ranks(conn) if renamed else None
        if rebuild:
            await self.rebuild(conn)
            return
        try:
            if cats is not None:
                self.index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
                self.category_loads += 1
            if ranks is not None:
                # Every rank may shift when one name changes; products not yet indexed get theirs below.
                _scatter(self._ranks, *ranks)
                present = [i for i in ranks[0] if i in self.index]
                self.index.set_name_ranks(present, [self._ranks[i] for i in present])
                self.rank_loads += 1
            self._apply(rows, product_ids)
        except BaseException:
            self.version = -1  # half applied: no page from it, and the next catch-up rebuilds
            raise
        self.epoch, self.version = epoch, current
        self.applied += count

    def _apply(self, rows: Sequence[asyncpg.Record], ids: list[int]) -> None:
        _scatter(self._hashes, [r[0] for r in rows], [r[6] for r in rows])
        found = set()
        for r in rows:
            pid = r[0]
            found.add(pid)
            self.index.upsert(pid, r[1], r[2], r[3], r[4], self._ranks[pid], r[5])
        for pid in ids:
            if pid not in found:  # deleted from the table (its rank and hash are never read again)
                self.index.remove(pid)


async def _name_ranks(conn: asyncpg.Connection) -> tuple[array[int], array[int]]:
    """(ids, name ranks) of every product, streamed into arrays."""
    ids, ranks = array("q"), array("q")
    async for chunk in repo.name_rank_chunks(conn):
        _columns(chunk, (ids, ranks))
    return ids, ranks
