"""CatalogIndex behaviour on both builds: the SQL's tie-breaks, the category walks, facets, updates, input
checks and memory per product."""

from __future__ import annotations

import random
import tracemalloc
from array import array
from typing import Any

import pytest
from core_ext_testlib import Impl, RefCatalog, RefProduct, load_catalog, upsert_rows

SORTS = ("name", "-name", "price", "-price", "newest")


def P(
    category: int | None = 1,
    price: int | None = 100,
    stock: int = 1,
    created: int = 0,
    rank: int = 0,
    active: bool = True,
) -> RefProduct:
    return RefProduct(category, price, stock, created, rank, active)


def make(impl: Impl, products: dict[int, RefProduct], categories: dict[int, tuple[int | None, bool]]) -> Any:
    index = impl.CatalogIndex()
    load_catalog(index, RefCatalog(products, categories))
    return index


ROOT = {1: (None, True)}


def test_ties_follow_the_sql_order(impl: Impl) -> None:
    products = {
        5: P(price=200, created=10, rank=1),
        3: P(price=None, created=10, rank=1),
        9: P(price=200, created=5, rank=0),
        2: P(price=None, created=10, rank=1),
        7: P(price=100, created=20, rank=1),
    }
    index = make(impl, products, ROOT)
    assert index.query("name", 0, 10) == ([9, 2, 3, 5, 7], 5)
    assert index.query("-name", 0, 10) == ([7, 5, 3, 2, 9], 5)
    assert index.query("price", 0, 10) == ([7, 5, 9, 2, 3], 5)  # NULLS LAST, ties by id
    assert index.query("-price", 0, 10) == ([9, 5, 7, 3, 2], 5)  # NULLS LAST, ties by id DESC
    assert index.query("newest", 0, 10) == ([7, 5, 3, 2, 9], 5)
    assert index.query("price", 3, 1) == ([2], 5)
    assert index.query("price", 5, 10) == ([], 5)
    assert index.query("price", 0, 0) == ([], 5)


def test_filters(impl: Impl) -> None:
    products = {
        1: P(price=None, stock=5),
        2: P(price=100, stock=0),
        3: P(price=150, stock=-1),
        4: P(price=200, stock=2, active=False),
        5: P(price=250, stock=1),
    }
    index = make(impl, products, ROOT)
    assert index.query("price", 0, 10) == ([2, 3, 5, 1], 4)  # the inactive product never shows
    assert index.query("price", 0, 10, min_price=0) == ([2, 3, 5], 3)  # unpriced never match a bound
    assert index.query("price", 0, 10, max_price=150) == ([2, 3], 2)
    assert index.query("price", 0, 10, min_price=150, max_price=150) == ([3], 1)  # bounds inclusive
    assert index.query("price", 0, 10, min_price=151, max_price=150) == ([], 0)
    assert index.query("price", 0, 10, in_stock=True) == ([5, 1], 2)
    assert index.query("price", 0, 10, in_stock=False) == ([2, 3], 2)  # stock <= 0
    assert index.query("price", 0, 10, only=[5, 5, 4, 1, 99, 10**6]) == ([5, 1], 2)
    assert index.query("price", 0, 10, only=iter({3, 2})) == ([2, 3], 2)
    assert index.query("price", 0, 10, only=[]) == ([], 0)
    # An array('i') (how the service holds a search's hits) is read in place by the compiled build.
    assert index.query("price", 0, 10, only=array("i", [5, 5, 4, 1, 99, 10**6])) == ([5, 1], 2)
    assert index.count(in_stock=True, only=array("i", [1, 2, 3])) == 1
    assert index.count(min_price=100, in_stock=False) == 2


def test_category_filter_walks_every_descendant(impl: Impl) -> None:
    # 1 -> 2 (inactive) -> 3; 4 is another root; 8 names a category missing from the table.
    cats = {1: (None, True), 2: (1, False), 3: (2, True), 4: (None, True)}
    products = {10: P(1), 11: P(2), 12: P(3), 13: P(4), 14: P(8), 15: P(None), 16: P(3, active=False)}
    index = make(impl, products, cats)
    assert index.query("name", 0, 10, category=1) == ([10, 11, 12], 3)
    assert index.query("name", 0, 10, category=2) == ([11, 12], 2)
    assert index.query("name", 0, 10, category=8) == ([14], 1)
    assert index.query("name", 0, 10, category=99) == ([], 0)
    # Only active categories are listed; the walk goes through active ones only (2 stops 1's tree).
    assert index.category_counts() == {1: 1, 3: 1, 4: 1}


def test_category_cycles_end_like_sql_union(impl: Impl) -> None:
    cats = {1: (3, True), 2: (1, True), 3: (2, True), 4: (3, True)}
    products = {1: P(1), 2: P(2), 3: P(3), 4: P(4)}
    index = make(impl, products, cats)
    assert index.count(category=2) == 4
    assert index.category_counts() == {1: 4, 2: 4, 3: 4, 4: 1}


def test_set_categories_replaces_the_tree(impl: Impl) -> None:
    index = make(impl, {1: P(1), 2: P(2)}, {1: (None, True), 2: (1, True)})
    assert index.count(category=1) == 2
    index.set_categories([1, 2], [None, None], [True, False])
    assert index.count(category=1) == 1
    assert index.category_counts() == {1: 1}
    index.set_categories([], [], [])
    assert index.category_counts() == {}
    assert index.count(category=2) == 1  # still named by a product


def test_facets(impl: Impl) -> None:
    cats = {1: (None, True), 2: (1, True), 3: (1, True), 4: (2, False), 5: (1, False), 6: (None, True)}
    products = {
        1: P(2, price=50, stock=1),
        2: P(4, price=150, stock=0),
        3: P(3, price=None, stock=1),
        4: P(1, price=500, stock=1),
        5: P(5, price=100, stock=1),
        6: P(6, price=100, stock=0),
    }
    index = make(impl, products, cats)
    assert index.facets(category=1, price_bounds=[100, 200]) == {
        "categories": [(2, 2), (3, 1)],  # active children only; each with its whole subtree
        "prices": [1, 2, 1],  # < 100, [100, 200), >= 200
        "no_price": 1,
        "in_stock": 4,
        "out_of_stock": 1,
    }
    # Each dimension is counted under the others' filters, not its own.
    assert index.facets(category=1, in_stock=True, min_price=100, price_bounds=[100]) == {
        "categories": [(2, 0), (3, 0)],
        "prices": [1, 2],
        "no_price": 1,
        "in_stock": 2,
        "out_of_stock": 1,
    }
    assert index.facets()["categories"] == [(1, 5), (6, 1)]
    assert index.facets(category=99) == {
        "categories": [],
        "prices": [0],
        "no_price": 0,
        "in_stock": 0,
        "out_of_stock": 0,
    }


def test_updates_move_only_what_changed(impl: Impl) -> None:
    ref = RefCatalog({i: P(price=i % 4 * 10, created=i % 3, rank=i % 5) for i in range(1, 30)}, ROOT)
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    changes = [
        (5, P(price=5, created=0, rank=0, stock=0)),
        (7, P(price=None, created=7, rank=9)),
        (40, P(price=15, created=1, rank=2)),
        (7, P(price=15, created=7, rank=9, active=False)),
        (12, P(category=None, price=0, created=-5, rank=-1)),
    ]
    for i, p in changes:
        index.upsert(i, p.category, p.price, p.stock, p.created_us, p.name_rank, p.active)
        ref.products[i] = p
        for sort in SORTS:
            assert index.query(sort, 0, 100) == ref.query(sort, 0, 100)
    assert index.remove(40) is True
    assert index.remove(40) is False
    assert index.remove(10**6) is False
    del ref.products[40]
    assert 40 not in index and 5 in index and True not in index and "5" not in index
    assert len(index) == 29 and index.active_count == 28
    for sort in SORTS:
        assert index.query(sort, 0, 100) == ref.query(sort, 0, 100)


def random_product(rnd: random.Random) -> RefProduct:
    """A product of the batch tests: few categories, prices and ranks, so keys tie often."""
    return P(
        category=rnd.choice([None, 1, 2]),
        price=rnd.choice([None, rnd.randrange(50)]),
        stock=rnd.randrange(-1, 2),
        created=rnd.randrange(40),
        rank=rnd.randrange(300),
        active=rnd.random() > 0.1,
    )


@pytest.mark.parametrize("size", [7, 8, 200, 2048, 2049])
@pytest.mark.parametrize("beyond", [False, True], ids=["ids-inside", "ids-beyond"])
def test_batches_of_every_path_equal_one_by_one(impl: Impl, size: int, beyond: bool) -> None:
    """Each of upsert_many's three ways (one by one, merged in, re-sorted: the compiled build's thresholds at
    8 and 2,048 rows) gives what one by one does: new ids among old ones, moved keys, a repeated id (its
    last row wins), prices gained and lost, and cached filters kept exact through it."""
    rnd = random.Random(size)

    def product() -> RefProduct:
        return random_product(rnd)

    ref = RefCatalog({i: product() for i in range(0, 6000, 2)}, {1: (None, True), 2: (1, True)})
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    # New ids inside the columns' capacity (odd ones) keep the cached filters; ids beyond it grow them.
    fresh = (lambda: 6000 + rnd.randrange(400)) if beyond else (lambda: rnd.randrange(1, 5999, 2))
    filters: list[dict[str, Any]] = [{"category": 1}, {"in_stock": True}, {"min_price": 10, "max_price": 30}]
    for f in filters:
        index.query("name", 0, 10, **f)  # cached now: the batch must keep their bits and totals
    ids = [rnd.choice([rnd.randrange(0, 6000, 2), fresh()]) for _ in range(size - 1)]
    rows = [(i, product()) for i in [*ids, ids[0]]]  # the first id again, last: its second row wins
    upsert_rows(index, rows)
    ref.products.update(rows)
    assert len(index) == len(ref.products)
    assert index.active_count == sum(p.active for p in ref.products.values())
    for sort in SORTS:
        assert index.query(sort, 0, 10**6) == ref.query(sort, 0, 10**6)
        for f in filters:
            assert index.query(sort, 0, 10**6, **f) == ref.query(sort, 0, 10**6, **f)
    assert index.category_counts() == ref.category_counts()


def test_large_batch_equals_one_by_one(impl: Impl) -> None:
    """Beyond a few thousand rows the compiled build re-sorts once instead of moving rows one by one."""
    rnd = random.Random(5)

    def product() -> RefProduct:
        return random_product(rnd)

    ref = RefCatalog({i: product() for i in range(0, 6000, 2)}, {1: (None, True), 2: (1, True)})
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    rows = [(rnd.randrange(7000), product()) for _ in range(5000)]
    upsert_rows(index, rows)
    ref.products.update(rows)
    present = sorted(ref.products)
    ranks = [rnd.randrange(100) for _ in present]
    index.set_name_ranks(present, ranks)  # more than 2,048 rows: one re-sort of the name order
    for i, rank in zip(present, ranks, strict=True):
        ref.products[i].name_rank = rank
    for sort in SORTS:
        for offset in (0, 1234, 4000):
            for filters in ({"category": 1}, {"in_stock": False}):
                assert index.query(sort, offset, 60, **filters) == ref.query(sort, offset, 60, **filters)
    assert index.category_counts() == ref.category_counts()
    index.upsert(6001, 2, 7, 1, 3, 150, True)  # and single updates keep working after the re-sort
    ref.products[6001] = P(2, 7, 1, 3, 150, True)
    assert index.query("price", 0, 40) == ref.query("price", 0, 40)


COLUMNS = ("ids", "categories", "prices", "stocks", "created_us", "name_ranks", "active")
GOOD = (1, 1, 100, 1, 0, 0, True)
BAD = [
    ("ids", "1", TypeError),
    ("ids", True, TypeError),
    ("ids", -1, ValueError),
    ("ids", 2**31, ValueError),
    ("ids", 2**80, ValueError),
    ("categories", 1.0, TypeError),
    ("categories", -3, ValueError),
    ("prices", 1.5, TypeError),
    ("prices", 2**63, OverflowError),
    ("prices", -(2**63) - 1, OverflowError),
    ("stocks", None, TypeError),
    ("stocks", False, TypeError),
    ("created_us", None, TypeError),
    ("name_ranks", 2**64, OverflowError),
    ("active", None, TypeError),
    ("active", "yes", TypeError),
]


@pytest.mark.parametrize(("column", "value", "error"), BAD)
def test_bad_rows_are_refused_and_change_nothing(impl: Impl, column: str, value: Any, error: type) -> None:
    index = make(impl, {1: P(), 2: P(price=None)}, ROOT)
    before = [index.query(sort, 0, 10) for sort in SORTS], index.category_counts()
    row = list(GOOD)
    row[COLUMNS.index(column)] = value
    with pytest.raises(error):
        index.upsert(*row)
    cols = [[g, v] for g, v in zip((2, 1, 5, 1, 0, 0, True), row, strict=True)]
    with pytest.raises(error):
        index.upsert_many(*cols)
    with pytest.raises(error):
        index.build(*cols)
    assert ([index.query(sort, 0, 10) for sort in SORTS], index.category_counts()) == before


def test_set_name_ranks(impl: Impl) -> None:
    index = make(impl, {1: P(rank=0), 2: P(rank=1), 3: P(rank=2)}, ROOT)
    index.set_name_ranks([3, 1], [-1, 5])
    assert index.query("name") == ([3, 2, 1], 3)
    with pytest.raises(ValueError, match="no such product"):
        index.set_name_ranks([2, 4], [9, 9])
    with pytest.raises(ValueError, match="same length"):
        index.set_name_ranks([2], [])
    with pytest.raises(OverflowError):
        index.set_name_ranks([2, 1], [9, 2**63])
    assert index.query("name") == ([3, 2, 1], 3)  # nothing changed by the refused calls
    assert index.query("-price") == ([3, 2, 1], 3)


def test_ranked_count_and_respread_name_ranks(impl: Impl) -> None:
    products = {1: P(rank=10), 2: P(rank=20), 3: P(rank=20), 4: P(rank=21, active=False), 5: P(rank=140)}
    index = make(impl, products, ROOT)
    assert index.ranked_count(15, 140) == 4  # inclusive; inactive products count (they hold a place)
    assert index.ranked_count(-(2**63), 2**63 - 1) == 5
    assert index.ranked_count(22, 139) == 0
    assert index.ranked_count(140, 10) == 0
    # 10 | 20 20 | 21 within [0, 100], three free slots after 20: steps of 100 // (3 + 3 + 1) = 14.
    ids, ranks = index.respread_name_ranks(0, 100, 20, 3)
    assert ids == [1, 2, 3, 4] and ranks == [14, 28, 28, 84]
    assert index.query("name") == ([1, 2, 3, 5], 4)
    assert index.ranked_count(29, 83) == 0  # the room made after 28
    with pytest.raises(ValueError, match="no room"):
        index.respread_name_ranks(10, 15, 0, 5)
    with pytest.raises(OverflowError):
        index.ranked_count(0, 2**63)
    with pytest.raises(TypeError):
        index.respread_name_ranks(True, 5, 0, 0)
    ids, ranks = index.respread_name_ranks(-(2**63), 2**63 - 1, 0, 0)  # the whole int64 range
    assert ids == [1, 2, 3, 4, 5] and ranks[0] < ranks[1] == ranks[2] < ranks[3] < ranks[4]
    assert index.query("name") == ([1, 2, 3, 5], 4)


def test_big_ints_are_fine_where_the_sql_allows_them(impl: Impl) -> None:
    # Product ids index the columns (they are dense serials), so a huge one is tested as a category only.
    index = impl.CatalogIndex()
    index.upsert(3, 2**31 - 1, 2**63 - 1, 10**30, -(2**63), 2**63 - 1, 1)
    index.upsert(0, None, -(2**63), -(10**30), 2**63 - 1, -(2**63), True)
    assert index.query("price", 0, 5) == ([0, 3], 2)
    assert index.query("-price", 0, 5) == ([3, 0], 2)
    assert index.query("newest", 0, 5, in_stock=True) == ([3], 1)
    assert index.query("name", 0, 5, category=2**31 - 1, max_price=2**63 - 1) == ([3], 1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"sort": "nope"}, ValueError),
        ({"sort": None}, ValueError),
        ({"offset": -1}, ValueError),
        ({"limit": -1}, ValueError),
        ({"limit": 1.0}, TypeError),
        ({"offset": True}, TypeError),
        ({"category": -1}, ValueError),
        ({"category": "1"}, TypeError),
        ({"min_price": 1.5}, TypeError),
        ({"max_price": 2**64}, OverflowError),
        ({"in_stock": "yes"}, TypeError),
        ({"only": [1, "2"]}, TypeError),
        ({"only": [-5]}, ValueError),
        ({"only": array("i", [1, -5])}, ValueError),
        ({"only": 5}, TypeError),
    ],
)
def test_bad_queries_are_refused(impl: Impl, kwargs: dict[str, Any], error: type) -> None:
    index = make(impl, {1: P(), 2: P()}, ROOT)
    args = {"sort": "name", "offset": 0, "limit": 10, **kwargs}
    with pytest.raises(error):
        index.query(args.pop("sort"), args.pop("offset"), args.pop("limit"), **args)


def test_bad_columns_and_tables(impl: Impl) -> None:
    index = impl.CatalogIndex()
    with pytest.raises(ValueError, match="same length"):
        index.build([1, 2], [1], [1], [1], [1], [1], [True])
    with pytest.raises(ValueError, match="duplicate"):
        index.build([1, 1], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1], [True, True])
    with pytest.raises(ValueError, match="duplicate"):
        index.set_categories([1, 1], [None, None], [True, True])
    with pytest.raises(ValueError, match="same length"):
        index.set_categories([1], [], [True])
    with pytest.raises(ValueError, match="ascending"):
        index.facets(price_bounds=[5, 5])
    with pytest.raises(TypeError):
        impl.CatalogIndex(1)
    assert len(index) == 0 and index.query("name") == ([], 0) and index.category_counts() == {}


def test_memory_per_product(impl: Impl) -> None:
    """At most 64 bytes per product, as reported and as traced (the compiled build allocates with
    PyMem_RawMalloc, which tracemalloc sees)."""
    n = 100_000
    ids = range(1, n + 1)
    columns = (
        list(ids),
        [i % 40 + 1 for i in ids],
        [None if i % 31 == 0 else i % 9973 for i in ids],
        [i % 7 - 1 for i in ids],
        [i * 1000 for i in ids],
        [i % 50_000 for i in ids],
        [i % 50 != 0 for i in ids],
    )
    tracemalloc.start()
    try:
        index = impl.CatalogIndex()
        index.set_categories(list(range(1, 41)), [None] * 40, [True] * 40)
        index.build(*columns)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.memory_bytes / n <= 64
    assert held / n <= 64, f"{held / n:.1f} bytes per product traced"
    assert held >= index.memory_bytes  # the report does not flatter
    for i in range(n + 1, n + 1001):  # growth by single upserts stays within the bound too
        index.upsert(i, 1, 5, 1, 1, 1, True)
    assert index.memory_bytes / (n + 1000) <= 64
