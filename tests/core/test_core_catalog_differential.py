"""Hypothesis differential tests: each CatalogIndex build answers exactly as the reference catalog does."""

from __future__ import annotations

from array import array
from typing import Any

from core_ext_testlib import Impl, RefCatalog, RefProduct, load_catalog, upsert, upsert_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SORTS = ("name", "-name", "price", "-price", "newest")
CATEGORY_IDS = st.integers(1, 12)
PRODUCT_IDS = st.integers(0, 70)


@st.composite
def category_tables(draw: st.DrawFn) -> dict[int, tuple[int | None, bool]]:
    """Forests and deep chains, inactive categories, parents outside the table, and parent cycles."""
    ids = draw(st.lists(CATEGORY_IDS, unique=True, max_size=10))
    table = {}
    for c in ids:
        parent = draw(st.none() | st.sampled_from(ids) | CATEGORY_IDS)
        table[c] = (None if parent == c else parent, draw(st.booleans()))
    return table


PRODUCTS = st.builds(
    RefProduct,
    category=st.none() | st.integers(1, 14),
    price=st.none() | st.integers(0, 6) | st.integers(-(2**63), 2**63 - 1),
    stock=st.integers(-3, 3),
    created_us=st.integers(0, 5) | st.integers(-(2**63), 2**63 - 1),
    name_rank=st.integers(0, 5),
    active=st.booleans(),
)


@st.composite
def catalogs(draw: st.DrawFn) -> RefCatalog:
    return RefCatalog(draw(st.dictionaries(PRODUCT_IDS, PRODUCTS, max_size=40)), draw(category_tables()))


FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "category": st.integers(1, 15),
        "min_price": st.integers(-1, 7),
        "max_price": st.integers(-1, 7),
        "in_stock": st.booleans(),
        "only": st.lists(st.integers(0, 80), max_size=20)
        | st.sets(PRODUCT_IDS)
        | st.lists(st.integers(0, 80), max_size=20).map(lambda ids: array("i", ids)),
    },
)
# Mostly early pages (most offsets beyond a small total would show nothing), sometimes anywhere.
OFFSETS = st.integers(0, 3) | st.integers(0, 45)
LIMITS = st.integers(1, 12) | st.integers(0, 45)
QUERIES = st.tuples(st.sampled_from(SORTS), OFFSETS, LIMITS, FILTERS)
BOUNDS = st.lists(st.integers(-1, 8), unique=True, max_size=4).map(sorted)

# upsert (product id, product) | remove (product id) | new category table | new name ranks (given in
# turn to the present products, from the one after the drawn id)
OPS = st.one_of(
    st.tuples(st.just("upsert"), PRODUCT_IDS, PRODUCTS),
    st.tuples(st.just("remove"), PRODUCT_IDS, st.none()),
    st.tuples(st.just("categories"), st.none(), category_tables()),
    st.tuples(st.just("ranks"), PRODUCT_IDS, st.lists(st.integers(0, 5), max_size=10)),
)


def check(index: Any, ref: RefCatalog, queries: list[Any], bounds: list[int]) -> None:
    for sort, offset, limit, filters in queries:
        assert index.query(sort, offset, limit, **filters) == ref.query(sort, offset, limit, **filters)
        assert index.count(**filters) == len(ref.rows(**filters))
        assert index.facets(price_bounds=bounds, **filters) == ref.facets(price_bounds=bounds, **filters)
    assert index.category_counts() == ref.category_counts()
    for low, high in ((-1, 6), (0, 0), (2, 4), (1, 3), (5, 1), (6, 9)):
        inside = sum(low <= p.name_rank <= high for p in ref.products.values())
        assert index.ranked_count(low, high) == (inside if low <= high else 0)
    assert len(index) == len(ref.products)
    assert index.active_count == sum(p.active for p in ref.products.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=catalogs(), queries=st.lists(QUERIES, min_size=1, max_size=8), bounds=BOUNDS)
def test_built_index_matches_reference(
    impl: Impl, ref: RefCatalog, queries: list[Any], bounds: list[int]
) -> None:
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    check(index, ref, queries, bounds)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ref=catalogs(),
    ops=st.lists(OPS, max_size=25),
    queries=st.lists(QUERIES, min_size=1, max_size=6),
    bounds=BOUNDS,
)
def test_updated_index_matches_reference(
    impl: Impl, ref: RefCatalog, ops: list[Any], queries: list[Any], bounds: list[int]
) -> None:
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    for kind, i, value in ops:
        if kind == "upsert":
            upsert(index, i, value)
        elif kind == "remove":
            assert index.remove(i) == (i in ref.products)
        elif kind == "categories":
            cats = sorted(value)
            index.set_categories(cats, [value[c][0] for c in cats], [value[c][1] for c in cats])
        else:
            present = sorted(ref.products, key=lambda j: (j <= i, j))[: len(value)]
            index.set_name_ranks(present, value[: len(present)])
            for j, rank in zip(present, value, strict=False):
                ref.products[j].name_rank = rank
        if kind == "upsert":
            ref.products[i] = value
        elif kind == "remove":
            ref.products.pop(i, None)
        elif kind == "categories":
            ref.categories = value
        # A query between updates: the compiled build keeps the last filters' matches and must keep
        # them exact through every kind of update.
        sort, offset, limit, filters = queries[len(ref.products) % len(queries)]
        assert index.query(sort, offset, limit, **filters) == ref.query(sort, offset, limit, **filters)
    check(index, ref, queries, bounds)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=catalogs(), rows=st.lists(st.tuples(PRODUCT_IDS, PRODUCTS), max_size=30), query=QUERIES)
def test_upsert_many_matches_one_by_one(
    impl: Impl, ref: RefCatalog, rows: list[tuple[int, RefProduct]], query: Any
) -> None:
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    sort, offset, limit, filters = query
    index.query(sort, offset, limit, **filters)  # a cached filter the batch must keep exact
    upsert_rows(index, rows)
    expected = RefCatalog({**ref.products, **dict(rows)}, ref.categories)
    check(index, expected, [query], [])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ref=catalogs(),
    low=st.sampled_from([-(2**62), -1000, -1, 0, 2]),
    high=st.sampled_from([1, 3, 5, 1000, 2**62]),
    after=st.integers(-2, 6),
    free=st.integers(0, 3),
    queries=st.lists(QUERIES, min_size=1, max_size=4),
)
def test_respread_name_ranks_keeps_the_order(
    impl: Impl, ref: RefCatalog, low: int, high: int, after: int, free: int, queries: list[Any]
) -> None:
    index = impl.CatalogIndex()
    load_catalog(index, ref)
    before = {sort: index.query(sort, 0, 100) for sort in SORTS}
    span = sorted((p.name_rank, i) for i, p in ref.products.items() if low <= p.name_rank <= high)
    try:
        ids, ranks = index.respread_name_ranks(low, high, after, free)
    except ValueError:  # no room: nothing changed
        assert len({r for r, _ in span}) + free + 1 > high - low
        check(index, ref, queries, [])
        return
    assert ids == [i for _, i in span]
    assert all(low < r < high for r in ranks)
    for k in range(1, len(span)):  # equal ranks stay equal, distinct ones keep their order and room
        assert (ranks[k] == ranks[k - 1]) == (span[k][0] == span[k - 1][0])
        assert ranks[k] >= ranks[k - 1]
        if span[k - 1][0] <= after < span[k][0]:  # the free slots: room for `free` ranks in between
            assert ranks[k] - ranks[k - 1] > free
    assert {sort: index.query(sort, 0, 100) for sort in SORTS} == before  # the name order did not move
    for i, rank in zip(ids, ranks, strict=True):
        ref.products[i].name_rank = rank
    check(index, ref, queries, [])
