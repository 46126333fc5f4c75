"""The consumer product list in memory: a core_ext.CatalogIndex kept exact from the change feed.

Built once from SQL (repo.index_*), then each catch-up reads the changes after the version it reflects
(repo.changes_since) and applies only those: changed products are refetched in one query, category
changes reload the (small) tree, and new, renamed or reactivated products get name ranks between their
neighbours' (server/catalog/ranks.py; all the ranks are reloaded only when that cannot be done). A gap
in the feed, a TRUNCATE, a price-list change or another database rebuilds everything.
Each catch-up reads in one REPEATABLE READ snapshot, so the index is exactly the catalog at `version`.

Searches (`q`) are answered from memory too: `search` (core_ext.SearchIndex) holds every product's search
text (repo.INDEX_PRODUCTS' last column, loaded with the rest; ~69 bytes a product at 1M) and is updated for
exactly the products a catch-up refetched (the full path: a text changes only with the hash below).

No name text is kept: SQL gives each product's name rank and a 64-bit hash of its name, held in arrays
indexed by product id (16 bytes a product: dicts of names and ranks, and a load holding every row, left
RSS at ~650 MB after a build at 1M products), and a full load streams its rows into typed arrays.

Fine-grained cache keys: every product has a row version, the catalog version of the last change to it that
this process applied (or the version of the last rebuild), and `structure` is the version of the last change
to what every answer shows (a category that existed, or a rebuild: categories that only arrive change no
row, and the categories pages that list them change their totals). An answer computed from the index is
keyed by its query, its ids, their row versions and its counts (`stamp`), under the generation
`epoch:structure:images`: a stock change to one product changes the keys of the answers showing it and of
the answers whose ids or counts it changes, and no other. A (product id, row version) pair names one state
of the row in every process (the row as of that version), so processes at different versions share a key
only for the same bytes.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from array import array
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import asyncpg

from core_ext import CatalogIndex, SearchIndex
from server.catalog import ranks as name_ranks
from server.catalog import repo
from server.catalog.hits import SearchHits
from server.catalog.rows import RowStore, tag_of

log = logging.getLogger("server.catalog.live")
_U64 = (1 << 64) - 1
# Answers remembered per process (keys are validated, normalised query keys of at most a few hundred bytes,
# held by the wrapper's memo too). With the page cache on, a list's answer is kept as its stamp (a cached
# hit needs no more), so an entry is a few hundred bytes: as many as the shopper mix's distinct URLs (18,600
# at 10,000 products; at 4,096 the memo emptied every few seconds there, and a third of the cached hits
# paid an index query and a stamp again). With it off, whole answers (up to a page of ids): fewer.
ANSWER_MEMO_ENTRIES = 32_768
ANSWER_MEMO_WHOLE_ENTRIES = 4096

# glibc keeps the heap a full load freed (its mmap threshold grows with each large block freed): at 1M
# products ~40 MB stayed resident after the build, and more after the start's other loads. malloc_trim
# gives it back. Absent elsewhere (musl, macOS): nothing to do.
_malloc_trim: Callable[[int], int] | None
try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # pragma: no cover - depends on the C library
    _malloc_trim = None


def trim_heap() -> None:
    """Give the heap a large load freed back to the system (glibc's malloc_trim; elsewhere nothing)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def digest(values: tuple[Any, ...]) -> str:
    """A 64-bit hash, in hex, of a tuple of ints (or of tuples of ints): int hashes are the same in every
    process, so cache keys built from it are too (str hashes are not: never pass text)."""
    return f"{hash(values) & _U64:x}"


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
        row_store_bytes: int = 0,
        make_search: Callable[[], SearchIndex] = SearchIndex,
        answer_entries: int = ANSWER_MEMO_ENTRIES,
    ) -> None:
        self.price_list = price_list
        self._answer_entries = answer_entries
        # Serialized list items and detail bodies by product id (rows.py): new ones whenever what every row
        # shows changes (category names, the price list: a rebuild or a change to a category that existed).
        self._row_store_bytes = row_store_bytes
        self.items = RowStore(row_store_bytes)
        self.details = RowStore(row_store_bytes)
        # (position in the categories' order, name, name_ar) of every category, active or not, by id.
        self._category_names: dict[int, tuple[int, str, str | None]] = {}
        # Every category's record but its position (parent, active, Zoho id, name, name_ar, sort order), by
        # id: what a category change is compared with (_shows_same_categories).
        self._category_rows: dict[int, tuple[Any, ...]] = {}
        self.hits = SearchHits(0, 0) if hits is None else hits  # searches' ids per version (service)
        self._make_index = make_index  # the tests pass each build's class
        self.index = make_index()
        self._make_search = make_search
        self.search = make_search()  # search text of every product (active or not), by product id
        self.epoch = ""
        self.version = -1  # nothing reflected yet: never equal to a real version
        # Name rank and a hash of name and search text of every product, indexed by product id (ids are
        # dense, as in the index). A changed product whose hash differs was renamed or changed what search
        # matches (a different text with the same 64-bit hash would go unnoticed: a 2**-64 chance per
        # change): that or a new product reloads the ranks; any other change upserts the product with the
        # rank it has.
        self._ranks = array("q")
        self._hashes = array("q")
        # What the index and its stored rows show of the price lists (repo.SHOWN_PRICE_LISTS): a price-list
        # change rebuilds only when that differs (a sync creating a Zoho price book's list changes nothing).
        self._lists: tuple[tuple[Any, ...], ...] = ()
        self._categories: dict[int | None, list[Category]] = {None: []}
        # category_counts() of the (epoch, version) reflected: products change only with the version.
        self._counts: tuple[tuple[str, int], dict[int, int]] = (("", -1), {})
        # Row version by product id (grown on demand; 0 = never seen) and the structure version.
        self._versions = array("q")
        self.structure = -1
        # Version of the last change to what searches match (a text, a product appearing or (de)activated,
        # or a rebuild): remembered search hits are keyed by it, so stock and price changes keep them.
        self.search_version = -1
        self._advanced = asyncio.Event()  # set and replaced each time `version` moves
        # Answers computed from this index, by query key, for the (epoch, version) they were computed at:
        # a cached hit then costs a dict look-up, not an index query and a stamp (service, router).
        self._answers: dict[str, tuple[str, int, Any]] = {}
        self.rebuilds = 0
        self.applied = 0  # changes applied incrementally
        self.quick = 0  # catch-ups done in one statement (_quick_catch_up)
        self.rank_loads = 0
        self.rank_places = 0  # catch-ups that placed new names between their neighbours' ranks
        self.rank_relabels = 0  # narrow gaps widened by spreading the names around them anew (ranks.widen)
        self.category_loads = 0
        self.served = 0  # pages answered from the index
        self.catch_up_s = self.catch_up_max_s = 0.0  # time in catch-ups (what requests may wait for)
        self.refill: list[int] = []  # list items to fetch again after the last catch-up (_commit)
        self.refilled = 0  # list items fetched so

    def stamp(self, ids: Iterable[int]) -> str:
        """What an answer listing `ids` depends on beyond its query and counts: the ids in order and their
        row versions (two 64-bit hashes; int hashes are the same in every process)."""
        versions = self._versions
        n = len(versions)
        ids = tuple(ids)
        return f"{digest(ids)}.{digest(tuple([versions[i] if i < n else 0 for i in ids]))}"

    def row_tags(self, ids: Sequence[int], flags: Sequence[bool]) -> list[int]:
        """Each product's RowStore tag: its row version and image flag (`flags`, in the order of `ids`)."""
        versions = self._versions
        n = len(versions)
        return [tag_of(versions[i] if i < n else 0, f) for i, f in zip(ids, flags, strict=True)]

    def facet_heads(self, category_ids: Iterable[int]) -> list[tuple[int, str, str | None]]:
        """(id, name, name_ar) of these categories in the categories' order (unknown ids left out)."""
        names = self._category_names
        found = sorted((names[c][0], c) for c in category_ids if c in names)
        return [(c, names[c][1], names[c][2]) for _, c in found]

    def _new_rows(self, cats: Sequence[asyncpg.Record]) -> None:
        # What every stored row shows changed (or may have): start empty stores.
        self.items = RowStore(self._row_store_bytes)
        self.details = RowStore(self._row_store_bytes)
        self._set_categories(cats)

    def _set_categories(self, cats: Sequence[asyncpg.Record]) -> None:
        self._category_names = {r[0]: (r[7], r[4], r[5]) for r in cats}
        self._category_rows = {r[0]: tuple(r[1:7]) for r in cats}

    def _shows_same_categories(self, cats: Sequence[asyncpg.Record]) -> bool:
        """True when every category known before is as it was (only new ones came): then no stored row and
        no answer shows anything else, since a row shows its own, existing category, and the old ones keep
        their order (position follows sort order, name and id, all unchanged). A new category's place in a
        categories page changes that page's total (IndexedCategories.key); facets and lists name it only
        once products are in it, which changes their stamps."""
        rows = {r[0]: tuple(r[1:7]) for r in cats}
        return bool(self._category_rows) and all(rows.get(c) == old for c, old in self._category_rows.items())

    def remembered(self, key: str) -> Any | None:
        """The answer kept for `key` at the version the index reflects now, or None."""
        found = self._answers.get(key)
        if found is None or found[1] != self.version or found[0] != self.epoch:
            return None
        return found[2]

    def remember(self, key: str, answer: Any) -> None:
        """Keep an answer computed at the current version (bounded: emptied when full)."""
        if len(self._answers) >= self._answer_entries:
            self._answers.clear()
        self._answers[key] = (self.epoch, self.version, answer)

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
            "search_version": self.search_version,
            "products": len(self.index),
            "active": self.index.active_count,
            "memory_bytes": self.index.memory_bytes,
            "search": {
                "products": len(self.search),
                "memory_bytes": self.search.memory_bytes,
                "dead_bytes": self.search.dead_bytes,
                "compactions": self.search.compactions,
            },
            "rebuilds": self.rebuilds,
            "applied": self.applied,
            "quick_catch_ups": self.quick,
            "rank_loads": self.rank_loads,
            "rank_places": self.rank_places,
            "rank_relabels": self.rank_relabels,
            "category_loads": self.category_loads,
            "served": self.served,
            "catch_up_ms": round(self.catch_up_s * 1000, 1),
            "catch_up_max_ms": round(self.catch_up_max_s * 1000, 1),
            "search_memo": self.hits.report(),
            "item_store": self.items.report(),
            "items_refilled": self.refilled,
            "detail_store": self.details.report(),
        }

    async def rebuild(self, conn: asyncpg.Connection) -> None:
        """Load everything from one snapshot into a fresh index, then swap it in."""
        started = time.perf_counter()
        loaded, ranked = await self._build(conn)
        trim_heap()  # the load's columns are garbage now
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
        search = self._make_search()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            epoch, version = await repo.catalog_state(conn)
            cats = await repo.index_categories(conn)
            lists = await repo.shown_price_lists(conn, self.price_list)
            async for chunk in repo.index_product_chunks(conn, self.price_list):
                _columns(chunk, columns)
                search.set_many(ids[len(ids) - len(chunk) :], [r[7] for r in chunk])
            search.trim()
            loaded = time.perf_counter()
            ranks = _scatter(array("q"), *await name_ranks.load(conn))
        ranked = time.perf_counter()
        index = self._make_index()
        index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
        index.build(ids, categories, prices, stocks, created, [ranks[i] for i in ids], active)
        self.index, self.search, self.epoch, self.version = index, search, epoch, version
        self._ranks, self._hashes, self._lists = ranks, _by_id(ids, hashes), lists
        self._categories = category_lists(cats)
        self._new_rows(cats)
        self._versions = array("q", [version]) * (ids[-1] + 1 if ids else 1)
        self.structure = self.search_version = version
        self.rebuilds += 1
        self._moved()
        return loaded, ranked

    async def catch_up(self, conn: asyncpg.Connection) -> repo.CommitTimes:
        """Apply every change after `version` (a full rebuild only when the feed cannot say what changed);
        return when the changes it applied committed (none for a rebuild after a gap)."""
        if self.version < 0:
            await self.rebuild(conn)
            return []
        started = time.perf_counter()
        times = await self._quick_catch_up(conn)
        if times is None:
            times = await self._full_catch_up(conn)
        took = time.perf_counter() - started
        self.catch_up_s += took
        self.catch_up_max_s = max(self.catch_up_max_s, took)
        return times

    async def _quick_catch_up(self, conn: asyncpg.Connection) -> repo.CommitTimes | None:
        """The common case (stock, prices, product fields, new products: no rename, no category change) in one
        statement, so one round trip (one snapshot without a transaction's BEGIN and COMMIT: under load each
        round trip waits for a turn of the busy event loop). None when the full path must run instead."""
        known_max = len(self._hashes) - 1  # a product with a larger id is new
        epoch, current, changes, rows, neighbours, times = await repo.catch_up(
            conn, self.version, self.price_list, known_max
        )
        if epoch != self.epoch or changes is None:
            return None
        if any(ids is None or tbl not in ("products", "product_prices") for _, tbl, ids in changes):
            return None
        index, listed = self.index, self.is_listed
        if any(r[0] in index and (self._hashes[r[0]] != r[6] or (r[5] and not listed(r[0]))) for r in rows):
            return None  # renamed or listed again: the full path places it
        new = [r[0] for r in rows if r[0] not in index]
        if any(pid <= known_max for pid in new):
            return None  # new below the largest id: no neighbours read for it here
        placed = None
        if neighbours:  # new active products (all of them: ids above known_max)
            placed = name_ranks.assign(neighbours, self._ranks, listed, self._relabel)
            if placed is None:
                return None
            _scatter(self._ranks, *placed)  # before _commit upserts them: nothing is read in between
            self.rank_places += 1
        product_ids = sorted({i for _, _, ids in changes for i in ids or ()})
        searched = any(self.is_listed(r[0]) != r[5] for r in rows)
        self._commit(epoch, current, changes, rows, product_ids, None, None, searched)
        self.quick += 1
        return times

    async def _full_catch_up(self, conn: asyncpg.Connection) -> repo.CommitTimes:
        # Everything one REPEATABLE READ snapshot: state, changes, rows, categories and name ranks.
        placed = None
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            epoch, current = await repo.catalog_state(conn)
            changes, times = (
                await repo.timed_changes_since(conn, self.version) if epoch == self.epoch else (None, [])
            )
            if changes is None or any(ids is None and tbl != "price_lists" for _, tbl, ids in changes):
                rebuild = True
            elif any(tbl == "price_lists" for _, tbl, _ in changes) and self._lists != (
                await repo.shown_price_lists(conn, self.price_list)
            ):
                rebuild = (
                    True  # the consumer list or one a detail shows changed (a list no one sees: nothing)
                )
            else:
                rebuild = False
                product_ids = sorted(
                    {i for _, tbl, ids in changes if tbl in ("products", "product_prices") for i in ids or ()}
                )
                categories_changed = any(tbl == "categories" for _, tbl, _ in changes)
                cats = await repo.index_categories(conn) if categories_changed else None
                rows = await repo.index_products(conn, self.price_list, product_ids) if product_ids else []
                renamed = any(r[0] not in self.index or self._hashes[r[0]] != r[6] for r in rows)
                searched = renamed or any(self.is_listed(r[0]) != r[5] for r in rows)
                listed = self.is_listed
                unranked = [r[0] for r in rows if r[5] and (not listed(r[0]) or self._hashes[r[0]] != r[6])]
                placed = (
                    await name_ranks.place(conn, unranked, self._ranks, listed, self._relabel)
                    if unranked
                    else None
                )
                ranks = await name_ranks.load(conn) if unranked and placed is None else None
        if rebuild:
            await self.rebuild(conn)
            return times
        assert changes is not None
        if placed is not None:
            _scatter(self._ranks, *placed)  # before _commit upserts them: nothing is read in between
            self.rank_places += 1
        self._commit(epoch, current, changes, rows, product_ids, cats, ranks, searched)
        return times

    def _relabel(self, lo: int, hi: int, count: int) -> bool:
        """Widen the gap (lo, hi) for `count` names: the names around it take new ranks in the same order,
        in the index and here (ranks.widen); False when only a full load can (the window is too big). The
        index stays exact whatever follows: only ranks change, never the order of two names."""
        found = name_ranks.widen(self.index, lo, hi, count)
        if found is None:
            return False
        _scatter(self._ranks, *found)
        self.rank_relabels += 1
        return True

    def _commit(
        self,
        epoch: str,
        current: int,
        changes: Sequence[repo.Change],
        rows: Sequence[Sequence[Any]],
        product_ids: list[int],
        cats: Sequence[asyncpg.Record] | None,
        ranks: tuple[array[int], array[int]] | None,
        searched: bool,
    ) -> None:
        """Apply what a catch-up read and move to `current`."""
        try:
            shown_same = cats is not None and self._shows_same_categories(cats)
            if cats is not None:
                self.index.set_categories([r[0] for r in cats], [r[1] for r in cats], [r[2] for r in cats])
                self._categories = category_lists(cats)
                if shown_same:  # new categories only: every stored row and answer stays exact
                    self._set_categories(cats)
                else:
                    self._new_rows(cats)
                self.category_loads += 1
            if ranks is not None:
                # Every rank may shift when one name changes; products not yet indexed get theirs below.
                _scatter(self._ranks, *ranks)
                present = [i for i in ranks[0] if i in self.index]
                self.index.set_name_ranks(present, [self._ranks[i] for i in present])
                self.rank_loads += 1
            # What the feed fetches again after this catch-up (CatalogFeed._refill): the changed active
            # products whose list item was kept (it was shown), and new ones (a first page may list them).
            store, index = self.items, self.index
            if self._row_store_bytes:  # with the stores off (ROW_STORE_MB=0) nothing is kept: no query
                self.refill = [r[0] for r in rows if r[5] and (r[0] not in index or store.holds(r[0]))]
            self._apply(rows, product_ids)
            self._touch(changes)
        except BaseException:
            self.version = -1  # half applied: no page from it, and the next catch-up rebuilds
            raise
        if cats is not None and not shown_same:
            self.structure = current
        if searched:
            self.search_version = current
        self.epoch, self.version = epoch, current
        self.applied += len(changes)
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

    def _apply(self, rows: Sequence[Sequence[Any]], ids: list[int]) -> None:
        _scatter(self._hashes, [r[0] for r in rows], [r[6] for r in rows])
        # Rows of the full path carry the search text; those of the quick path, only for new products (the
        # others' hashes did not change): set_many leaves an unchanged text as it is.
        texts = [r for r in rows if len(r) > 7 and r[7] is not None]
        self.search.set_many([r[0] for r in texts], [r[7] for r in texts])
        ranks = self._ranks
        n = len(ranks)
        pids = [r[0] for r in rows]
        # One compiled call: a large change (a bulk UPDATE of every product) sorts each ordering once instead
        # of moving rows one by one (50,000 rows: ~30 ms, not ~650 ms of the event loop).
        self.index.upsert_many(
            pids,
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
            # A new inactive product has no rank yet (never listed; placed when it is listed again).
            [ranks[pid] if pid < n else 0 for pid in pids],
            [r[5] for r in rows],
        )
        found = set(pids)
        for pid in ids:
            if pid not in found:  # deleted from the table (its rank and hash are never read again)
                self.index.remove(pid)
                self.search.remove(pid)
