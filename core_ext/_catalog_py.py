"""Pure-Python ``CatalogIndex``: the twin of ``_catalog.pyx`` with the same API, algorithm and answers.

Layout (both builds): columns indexed by product id (category slot, price in cents, created_at in µs,
name rank, a flag byte) and three orderings of the present product ids kept sorted under updates:
``(name_rank, id)``, ``(price, id)`` with the unpriced ids after the priced ones (by id), and
``(created_us, id)``. A query marks the matching ids in a mask (one pass over the columns, or over
``only``), counts them, and walks one ordering from the end its sort reads, skipping unmarked ids.
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Final

from core_ext._catalog_tree import MAX_ID, CategoryTree, check_id, check_int64

__all__ = ["SORTS", "CatalogIndex"]

SORTS: Final = ("name", "-name", "price", "-price", "newest")
_PRESENT: Final = 1
_ACTIVE: Final = 2
_IN_STOCK: Final = 4
_HAS_PRICE: Final = 8


def _check_sort(sort: object) -> str:
    if not isinstance(sort, str) or sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    return sort


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} = {value}: must be >= 0")
    return int(value)


def _opt_int64(value: object, what: str) -> int | None:
    return None if value is None else check_int64(value, what)


def _check_bounds(bounds: Sequence[int]) -> list[int]:
    out = [check_int64(b, f"price_bounds[{k}]") for k, b in enumerate(bounds)]
    if any(a >= b for a, b in itertools.pairwise(out)):
        raise ValueError("price_bounds must be strictly ascending")
    return out


def _check_stock(value: object, what: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected int, got {type(value).__name__}")
    return value > 0


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, int):
        raise TypeError(f"{what}: expected bool, got {type(value).__name__}")
    return bool(value)


class CatalogIndex:
    """Every list, count and facet of the consumer catalog answered from memory, exactly as the SQL does."""

    def __init__(self) -> None:
        self._tree = CategoryTree()
        self._clear()

    def _clear(self) -> None:
        self._flags = bytearray()
        self._cat = array("i")
        self._price = array("q")
        self._created = array("q")
        self._rank = array("q")
        self._by_name = array("i")
        self._by_price = array("i")
        self._by_created = array("i")
        self._n_priced = 0
        self._active = 0

    # -- sizes -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, product_id: object, /) -> bool:
        i = product_id if isinstance(product_id, int) and not isinstance(product_id, bool) else -1
        return 0 <= i < len(self._flags) and bool(self._flags[i] & _PRESENT)

    @property
    def active_count(self) -> int:
        """Number of active products (the total of a query without filters)."""
        return self._active

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the columns and orderings (not the category tree, which is per category)."""
        cols = (
            len(self._flags)
            + 4 * len(self._cat)
            + 8 * (len(self._price) + len(self._created) + len(self._rank))
        )
        return cols + 4 * (len(self._by_name) + len(self._by_price) + len(self._by_created))

    # -- updates -----------------------------------------------------------------------------------------
    def set_categories(
        self, ids: Sequence[int], parents: Sequence[int | None], active: Sequence[bool]
    ) -> None:
        """Replace the category table: ids, parent ids (None for a root), is_active; position by position."""
        self._tree.replace(ids, parents, active)

    def build(
        self,
        ids: Sequence[int],
        categories: Sequence[int | None],
        prices: Sequence[int | None],
        stocks: Sequence[int],
        created_us: Sequence[int],
        name_ranks: Sequence[int],
        active: Sequence[bool],
    ) -> None:
        """Replace every product from column lists (one row per position); the category table stays."""
        rows = self._rows(ids, categories, prices, stocks, created_us, name_ranks, active)
        top = max((r[0] for r in rows), default=-1)
        if len({r[0] for r in rows}) != len(rows):
            raise ValueError("build: duplicate product id")
        self._clear()
        self._grow(top)
        for i, cat, price, stock, created, rank, on in rows:
            self._store(i, cat, price, stock, created, rank, on)
        present = [r[0] for r in rows]
        self._by_name = array("i", sorted(present, key=lambda j: (self._rank[j], j)))
        priced = sorted(
            (j for j in present if self._flags[j] & _HAS_PRICE), key=lambda j: (self._price[j], j)
        )
        self._n_priced = len(priced)
        self._by_price = array("i", priced + sorted(j for j in present if not self._flags[j] & _HAS_PRICE))
        self._by_created = array("i", sorted(present, key=lambda j: (self._created[j], j)))

    def upsert(
        self,
        product_id: int,
        category: int | None,
        price_cents: int | None,
        stock: int,
        created_us: int,
        name_rank: int,
        active: bool,
    ) -> None:
        """Insert or replace one product; moves it in an ordering only when that ordering's key changed."""
        (row,) = self._rows(
            [product_id], [category], [price_cents], [stock], [created_us], [name_rank], [active]
        )
        self._upsert(*row)

    def upsert_many(
        self,
        ids: Sequence[int],
        categories: Sequence[int | None],
        prices: Sequence[int | None],
        stocks: Sequence[int],
        created_us: Sequence[int],
        name_ranks: Sequence[int],
        active: Sequence[bool],
    ) -> None:
        """``upsert`` for each position of the column lists, in order (all rows are checked first)."""
        for row in self._rows(ids, categories, prices, stocks, created_us, name_ranks, active):
            self._upsert(*row)

    def set_name_ranks(self, ids: Sequence[int], name_ranks: Sequence[int]) -> None:
        """New name ranks for present products (after names changed); the other columns stay."""
        if len(ids) != len(name_ranks):
            raise ValueError("columns must have the same length")
        rows = []
        for k, (i, rank) in enumerate(zip(ids, name_ranks, strict=True)):
            rows.append((check_id(i, f"ids[{k}]"), check_int64(rank, f"name_ranks[{k}]")))
            if i >= len(self._flags) or not self._flags[i] & _PRESENT:
                raise ValueError(f"ids[{k}] = {i}: no such product")
        for i, rank in rows:
            self._rank[i] = rank
        self._by_name = array("i", sorted(self._by_name, key=lambda j: (self._rank[j], j)))

    def _rank_span(self, lo: int, hi: int) -> tuple[int, int]:
        # Positions [start, end) of the name order whose rank is in [lo, hi].
        key = lambda j: (self._rank[j], j)  # noqa: E731
        start = bisect_left(self._by_name, (lo, -1), key=key)
        return start, bisect_left(self._by_name, (hi + 1, -1), lo=start, key=key)

    def ranked_count(self, low: int, high: int) -> int:
        """How many products (active or not) have a name rank in [low, high] (two binary searches)."""
        lo, hi = check_int64(low, "low"), check_int64(high, "high")
        if lo > hi:
            return 0
        start, end = self._rank_span(lo, hi)
        return end - start

    def respread_name_ranks(self, low: int, high: int, after: int, free: int) -> tuple[list[int], list[int]]:
        """Give the products (active or not) whose name rank is in [low, high] new ranks spread evenly
        strictly inside (low, high), in the order they have (equal ranks stay equal), with ``free`` empty
        slots after the last rank <= ``after``; returns their (ids, new ranks) in name order. The name order
        does not move (a local relabel of name ranks: server/catalog/ranks.py)."""
        lo, hi = check_int64(low, "low"), check_int64(high, "high")
        gap = check_int64(after, "after")
        if free < 0:
            raise ValueError("free must be >= 0")
        if lo > hi:
            return [], []
        start, end = self._rank_span(lo, hi)
        span = [self._by_name[pos] for pos in range(start, end)]
        distinct = len({self._rank[i] for i in span})
        step = (hi - lo) // (distinct + free + 1)
        if step < 1:
            raise ValueError("no room for these ranks between low and high")
        ranks: list[int] = []
        slot = 0
        last: int | None = None
        for i in span:
            rank = self._rank[i]
            if rank != last:
                slot += 1
                if rank > gap and (last is None or last <= gap):
                    slot += free
                last = rank
            self._rank[i] = lo + step * slot
            ranks.append(self._rank[i])
        return span, ranks

    def remove(self, product_id: int) -> bool:
        """Forget a product; False when it was not there."""
        i = check_id(product_id, "product_id")
        if i >= len(self._flags) or not self._flags[i] & _PRESENT:
            return False
        self._unlink(i)
        if self._flags[i] & _ACTIVE:
            self._active -= 1
        self._flags[i] = 0
        return True

    def _rows(self, *cols: Sequence[object]) -> list[tuple[int, int, int | None, bool, int, int, bool]]:
        n = len(cols[0])
        if any(len(c) != n for c in cols):
            raise ValueError("columns must have the same length")
        ids, cats, prices, stocks, created, ranks, active = cols
        rows = []
        for k in range(n):
            cat = cats[k]
            rows.append(
                (
                    check_id(ids[k], f"ids[{k}]"),
                    -1 if cat is None else self._tree.slot(check_id(cat, f"categories[{k}]")),
                    _opt_int64(prices[k], f"prices[{k}]"),
                    _check_stock(stocks[k], f"stocks[{k}]"),
                    check_int64(created[k], f"created_us[{k}]"),
                    check_int64(ranks[k], f"name_ranks[{k}]"),
                    _check_flag(active[k], f"active[{k}]"),
                )
            )
        return rows

    def _grow(self, i: int) -> None:
        n = len(self._flags)
        if i < n:
            return
        # Amortised growth for ids beyond the end; build() sizes exactly.
        new = i + 1 if n == 0 else max(i + 1, min(MAX_ID + 1, n + n // 8 + 1024))
        extra = new - n
        self._flags.extend(bytes(extra))
        self._cat.extend([-1] * extra)
        for col in (self._price, self._created, self._rank):
            col.extend([0] * extra)

    def _store(
        self, i: int, cat: int, price: int | None, stock: bool, created: int, rank: int, on: bool
    ) -> None:
        self._cat[i] = cat
        self._price[i] = 0 if price is None else price
        self._created[i] = created
        self._rank[i] = rank
        self._flags[i] = (
            _PRESENT
            | (_ACTIVE if on else 0)
            | (_IN_STOCK if stock else 0)
            | (_HAS_PRICE if price is not None else 0)
        )
        if on:
            self._active += 1

    def _upsert(
        self, i: int, cat: int, price: int | None, stock: bool, created: int, rank: int, on: bool
    ) -> None:
        self._grow(i)
        f = self._flags[i]
        if not f & _PRESENT:
            self._store(i, cat, price, stock, created, rank, on)
            self._link(i, name=True, price=True, created=True)
            return
        moved_name = self._rank[i] != rank
        had_price = bool(f & _HAS_PRICE)
        moved_price = had_price != (price is not None) or (had_price and self._price[i] != price)
        moved_created = self._created[i] != created
        self._unlink(i, name=moved_name, price=moved_price, created=moved_created)
        if f & _ACTIVE:
            self._active -= 1
        self._store(i, cat, price, stock, created, rank, on)
        self._link(i, name=moved_name, price=moved_price, created=moved_created)

    def _price_pos(self, i: int) -> int:
        if self._flags[i] & _HAS_PRICE:
            return bisect_left(
                self._by_price, (self._price[i], i), 0, self._n_priced, key=lambda j: (self._price[j], j)
            )
        return bisect_left(self._by_price, i, self._n_priced, len(self._by_price))

    def _unlink(self, i: int, *, name: bool = True, price: bool = True, created: bool = True) -> None:
        # Positions are found from the keys still stored for `i`; the other ids' keys never change here.
        if name:
            del self._by_name[
                bisect_left(self._by_name, (self._rank[i], i), key=lambda j: (self._rank[j], j))
            ]
        if price:
            del self._by_price[self._price_pos(i)]
            if self._flags[i] & _HAS_PRICE:
                self._n_priced -= 1
        if created:
            pos = bisect_left(self._by_created, (self._created[i], i), key=lambda j: (self._created[j], j))
            del self._by_created[pos]

    def _link(self, i: int, *, name: bool, price: bool, created: bool) -> None:
        if name:
            self._by_name.insert(
                bisect_left(self._by_name, (self._rank[i], i), key=lambda j: (self._rank[j], j)), i
            )
        if price:
            self._by_price.insert(self._price_pos(i), i)
            if self._flags[i] & _HAS_PRICE:
                self._n_priced += 1
        if created:
            pos = bisect_left(self._by_created, (self._created[i], i), key=lambda j: (self._created[j], j))
            self._by_created.insert(pos, i)

    # -- queries -----------------------------------------------------------------------------------------
    def _mask(
        self,
        category: int | None,
        min_price: int | None,
        max_price: int | None,
        in_stock: bool | None,
        only: Iterable[int] | None,
    ) -> tuple[bytearray, int]:
        if category is not None:
            check_id(category, "category")
        lo = _opt_int64(min_price, "min_price")
        hi = _opt_int64(max_price, "max_price")
        stock = None if in_stock is None else _check_flag(in_stock, "in_stock")
        candidates: Iterable[int]
        candidates = range(len(self._flags)) if only is None else [check_id(j, "only[]") for j in only]
        sub = None if category is None else self._tree.subtree_mask(category)
        mask = bytearray(len(self._flags))
        if category is not None and sub is None:
            return mask, 0
        flags, cats, prices = self._flags, self._cat, self._price
        total = 0
        for i in candidates:
            if i >= len(flags) or mask[i]:
                continue
            f = flags[i]
            if not f & _ACTIVE:
                continue
            if stock is not None and bool(f & _IN_STOCK) != stock:
                continue
            if sub is not None:
                c = cats[i]
                if c < 0 or c >= len(sub) or not sub[c]:
                    continue
            if lo is not None or hi is not None:
                if not f & _HAS_PRICE:
                    continue
                p = prices[i]
                if (lo is not None and p < lo) or (hi is not None and p > hi):
                    continue
            mask[i] = 1
            total += 1
        return mask, total

    def query(
        self,
        sort: str = "name",
        offset: int = 0,
        limit: int = 50,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
    ) -> tuple[list[int], int]:
        """(ids of the page in order, total of the filter): the SQL list's page and count."""
        sort = _check_sort(sort)
        offset = _check_count(offset, "offset")
        limit = _check_count(limit, "limit")
        mask, total = self._mask(category, min_price, max_price, in_stock, only)
        page: list[int] = []
        if limit == 0 or offset >= total:
            return page, total
        skip = offset
        for seq, lo, hi, backward in self._walks(sort):
            rng = range(hi - 1, lo - 1, -1) if backward else range(lo, hi)
            for pos in rng:
                i = seq[pos]
                if mask[i]:
                    if skip:
                        skip -= 1
                    else:
                        page.append(i)
                        if len(page) == limit:
                            return page, total
        return page, total

    def _walks(self, sort: str) -> list[tuple[array[int], int, int, bool]]:
        n = len(self._by_name)
        if sort == "name":
            return [(self._by_name, 0, n, False)]
        if sort == "-name":
            return [(self._by_name, 0, n, True)]
        if sort == "price":
            return [(self._by_price, 0, n, False)]
        if sort == "-price":  # price DESC NULLS LAST, id DESC: each part read backwards
            return [(self._by_price, 0, self._n_priced, True), (self._by_price, self._n_priced, n, True)]
        return [(self._by_created, 0, n, True)]

    def count(
        self,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
    ) -> int:
        """The total of a filter without a page."""
        return self._mask(category, min_price, max_price, in_stock, only)[1]

    def _own(self) -> list[int]:
        own = [0] * len(self._tree)
        for i, f in enumerate(self._flags):
            if f & _ACTIVE and self._cat[i] >= 0:
                own[self._cat[i]] += 1
        return own

    def category_counts(self) -> dict[int, int]:
        """repo.CATEGORIES' product_count for every active category."""
        return self._tree.totals(self._own())

    def facets(
        self,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
        price_bounds: Sequence[int] = (),
    ) -> dict[str, object]:
        """Counts per child category, price bucket and stock state, each under the other filters."""
        bounds = _check_bounds(price_bounds)
        heads, members = self._tree.facet_groups(None if category is None else check_id(category, "category"))
        base, _ = self._mask(category, None, None, None, only)
        lo = _opt_int64(min_price, "min_price")
        hi = _opt_int64(max_price, "max_price")
        stock = None if in_stock is None else _check_flag(in_stock, "in_stock")
        cats = [0] * len(heads)
        buckets = [0] * (len(bounds) + 1)
        no_price = stocked = unstocked = 0
        for i, marked in enumerate(base):
            if not marked:
                continue
            f = self._flags[i]
            has = bool(f & _HAS_PRICE)
            p = self._price[i]
            price_ok = (lo is None and hi is None) or (
                has and (lo is None or p >= lo) and (hi is None or p <= hi)
            )
            stock_ok = stock is None or bool(f & _IN_STOCK) == stock
            if price_ok and stock_ok and self._cat[i] >= 0:
                for k in members[self._cat[i]]:
                    cats[k] += 1
            if stock_ok:
                if has:
                    buckets[_bucket(bounds, p)] += 1
                else:
                    no_price += 1
            if price_ok:
                if f & _IN_STOCK:
                    stocked += 1
                else:
                    unstocked += 1
        return {
            "categories": list(zip(heads, cats, strict=True)),
            "prices": buckets,
            "no_price": no_price,
            "in_stock": stocked,
            "out_of_stock": unstocked,
        }


def _bucket(bounds: list[int], price: int) -> int:
    """Bucket k holds bounds[k-1] <= price < bounds[k] (bucket 0: below bounds[0]; last: from bounds[-1])."""
    lo, hi = 0, len(bounds)
    while lo < hi:
        mid = (lo + hi) // 2
        if bounds[mid] <= price:
            lo = mid + 1
        else:
            hi = mid
    return lo
