"""The consumer product list in memory: a core_ext.CatalogIndex kept exact from the change feed.

Built once from SQL (repo.index_*), then each catch-up reads the changes after the version it reflects
(repo.changes_since) and applies only those: changed products are refetched in one query, category
changes reload the (small) tree, and the name ranks are reloaded only when a name changed or a product
appeared. A gap in the feed, a TRUNCATE, a price-list change or another database rebuilds everything.
Each catch-up reads in one REPEATABLE READ snapshot, so the index is exactly the catalog at `version`.

Fine-grained cache keys: every product has a row version, the catalog version of the last change to it that
this process applied (or the version of the last rebuild), and `structure` is the version of the last change
to what every answer shows (categories, or a rebuild). An answer computed from the index is keyed by its
query, its ids, their row versions and its counts (`stamp`), under the generation
`epoch:structure:images`: a stock change to one product changes the keys of the answers showing it and of
the answers whose ids or counts it changes, and no other. A (product id, row version) pair names one state
of the row in every process (the row as of that version), so processes at different versions share a key
only for the same bytes.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from core_ext import CatalogIndex
from server.catalog import repo
from server.catalog.hits import SearchHits

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_U64 = (1 << 64) - 1


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // _MICRO


class Category(NamedTuple):
    """One row of the categories endpoint, in repo.CATEGORIES' column order (product_count comes apart)."""

    id: int
    zoho_category_id: str
    name: str
    name_ar: str | None
    parent_id: int | None
    sort_order: int


def category_lists(rows: Sequence[asyncpg.Record]) -> dict[int | None, list[Category]]:
    """The active categories in the endpoint's order (sort_order, name by the database's collation, id):
    all of them under None, and under each parent id its active children (what `parent_id=` selects)."""
    lists: dict[int | None, list[Category]] = {None: []}
    for r in sorted((r for r in rows if r[2]), key=lambda r: r[7]):
        row = Category(r[0], r[3], r[4], r[5], r[1], r[6])
        lists[None].append(row)
        if row.parent_id is not None:
            lists.setdefault(row.parent_id, []).append(row)
    return lists


class LiveCatalog:
    """The index, the (epoch, version) it reflects, and counters for /ready."""

    def __init__(
        self,
        price_list: str,
        make_index: Callable[[], CatalogIndex] = CatalogIndex,
        hits: SearchHits | None = None,
    ) -> None:
        self.price_list = price_list
        self.hits = SearchHits(0, 0) if hits is None else hits  # searches' ids per version (service)
        self._make_index = make_index  # the tests pass each build's class
        self.index = make_index()
        self.epoch = ""
        self.version = -1  # nothing reflected yet: never equal to a real version
        # Name and rank of every product: a rename (or a new product) reloads the ranks; any other change
        # upserts the product with the rank it has.
        self._names: dict[int, str] = {}
        self._ranks: dict[int, int] = {}
        self._categories: dict[int | None, list[Category]] = {None: []}
        # category_counts() of the (epoch, version) reflected: products change only with the version.
        self._counts: tuple[tuple[str, int], dict[int, int]] = (("", -1), {})
        # Row version by product id (grown on demand; 0 = never seen) and the structure version.
        self._versions = array("q")
        self.structure = -1
        self._advanced = asyncio.Event()  # set and replaced each time `version` moves
        self.rebuilds = 0
        self.applied = 0  # changes applied incrementally
        self.rank_loads = 0
        self.category_loads = 0
        self.served = 0  # pages answered from the index

    def ready_for(self, epoch: str, version: int) -> bool:
        """True when the index is exactly the catalog at (epoch, version)."""
        return self.version == version and self.epoch == epoch

    def stamp(self, ids: Iterable[int]) -> str:
        """What an answer listing `ids` depends on beyond its query and counts: the ids in order and their
        row versions (two 64-bit hashes; int hashes are the same in every process)."""
        versions = self._versions
        n = len(versions)
        ids = tuple(ids)
        rows = hash(tuple([versions[i] if i < n else 0 for i in ids]))
        return f"{hash(ids) & _U64:x}.{rows & _U64:x}"

    def is_listed(self, product_id: int) -> bool:
        """True when the product exists and is active (what the list and the detail show)."""
        return self.index.count(only=(product_id,)) == 1

    async def wait_for(self, epoch: str, version: int, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until the index reflects at least `version` of `epoch`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (self.epoch == epoch and self.version >= version):
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except TimeoutError:
                return False
        return True

    def _moved(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    def report(self) -> dict[str, Any]:
        """The index's line in /ready."""
        return {
            "version": self.version,
            "structure": self.structure,
            "products": len(self.index),
            "active": self.index.active_count,
            "memory_bytes": self.index.memory_bytes,
            "rebuilds": self.rebuilds,
            "applied": self.applied,
            "rank_loads": self.rank_loads,
            "category_loads": self.category_loads,
            "served": self.served,
            "search_memo": self.hits.report(),
        }

    async def rebuild(self, conn: asyncpg.Connection) -> None:
        """Load everything from one snapshot into a fresh index, then swap it in."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            epoch, version = await repo.catalog_state(conn)
            cats = await repo.index_categories(conn)
            rows = await repo.index_products(conn, self.price_list)
            ranks = dict(await repo.name_ranks(conn))
        index = self._make_index()
        index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
        index.build(
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [_micros(r[4]) for r in rows],
            [ranks[r[0]] for r in rows],
            [r[5] for r in rows],
        )
        self.index, self.epoch, self.version = index, epoch, version
        self._categories = category_lists(cats)
        self._names, self._ranks = {r[0]: r[6] for r in rows}, ranks
        top = max((r[0] for r in rows), default=0)
        self._versions = array("q", [version]) * (top + 1)
        self.structure = version
        self.rebuilds += 1
        self._moved()

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
                renamed = any(self._names.get(r[0]) != r[6] for r in rows)
                ranks = await repo.name_ranks(conn) if renamed else None
        if rebuild:
            await self.rebuild(conn)
            return
        assert changes is not None
        try:
            if cats is not None:
                self.index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
                self._categories = category_lists(cats)
                self.category_loads += 1
            if ranks is not None:
                # Every rank may shift when one name changes; products not yet indexed get theirs below.
                self._ranks = dict(ranks)
                present = [i for i in self._ranks if i in self.index]
                self.index.set_name_ranks(present, [self._ranks[i] for i in present])
                self.rank_loads += 1
            self._apply(rows, product_ids)
            self._touch(changes)
        except BaseException:
            self.version = -1  # half applied: no page from it, and the next catch-up rebuilds
            raise
        if cats is not None:
            self.structure = current
        self.epoch, self.version = epoch, current
        self.applied += count
        self._moved()

    def _touch(self, changes: Sequence[repo.Change]) -> None:
        """Each changed product's row version becomes that of its last change (changes are in order)."""
        versions = self._versions
        for version, tbl, ids in changes:
            if tbl not in ("products", "product_prices"):
                continue
            for pid in ids or ():
                if pid >= len(versions):
                    versions.frombytes(bytes(8 * (pid + 1 - len(versions))))
                versions[pid] = version

    def category_page(
        self, parent_id: int | None, offset: int, limit: int
    ) -> tuple[list[tuple[Category, int]], int]:
        """repo.list_categories from memory: one page of active categories (all, or the children of
        `parent_id`) with their product counts (own and descendants', active products), and the total.
        The rows change only with `structure`, the counts with `version`."""
        rows = self._categories.get(parent_id, [])
        state = (self.epoch, self.version)
        if self._counts[0] != state:
            self._counts = (state, self.index.category_counts())
        counts = self._counts[1]
        return [(r, counts.get(r.id, 0)) for r in rows[offset : offset + limit]], len(rows)

    def _apply(self, rows: Sequence[asyncpg.Record], ids: list[int]) -> None:
        found = set()
        for r in rows:
            pid = r[0]
            found.add(pid)
            self.index.upsert(pid, r[1], r[2], r[3], _micros(r[4]), self._ranks[pid], r[5])
            self._names[pid] = r[6]
        for pid in ids:
            if pid not in found:  # deleted from the table
                self.index.remove(pid)
                self._names.pop(pid, None)
                self._ranks.pop(pid, None)
