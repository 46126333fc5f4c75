"""Leak check: a million CatalogIndex calls (queries, facets, updates, refused input) leave RSS flat."""

from __future__ import annotations

import contextlib
import gc

import psutil
import pytest
from core_ext_testlib import Impl

MiB = 1 << 20


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@pytest.mark.slow
def test_rss_flat_over_a_million_calls(impl: Impl) -> None:
    n = 60
    index = impl.CatalogIndex()
    index.set_categories([1, 2, 3], [None, 1, 2], [True, False, True])
    ids = list(range(n))
    index.build(
        ids,
        [i % 4 or None for i in ids],
        [None if i % 9 == 0 else i % 13 for i in ids],
        [i % 3 - 1 for i in ids],
        [i % 7 for i in ids],
        [i % 11 for i in ids],
        [i % 10 != 0 for i in ids],
    )
    only = {3, 5, 8, 13, 21, 34, 55, 89}

    def one_round(k: int) -> None:  # 10 calls
        index.query("name", k % 7, 10)
        index.query("-price", 0, 5, category=1, min_price=2, in_stock=True, only=only)
        index.query("price", 0, 5, max_price=k % 20)  # 20 filters: the kept matches churn
        index.facets(category=1, price_bounds=[3, 6, 9])
        index.category_counts()
        index.upsert(k % n, k % 3 + 1, k % 17, k % 5 - 2, k % 9, k % 19, k % 6 != 0)
        index.remove(n + 1)
        index.upsert(n + 1, None, None, 1, k, k, True)
        with contextlib.suppress(TypeError):
            index.query("name", 0, 10, only=[1, "x"])
        with contextlib.suppress(OverflowError):
            index.upsert_many([1, 2], [1, 1], [1, 2**64], [1, 1], [1, 1], [1, 1], [True, True])

    for k in range(10_000):  # warm-up: allocator pools, caches
        one_round(k)
    before = rss()
    for k in range(100_000):
        one_round(k)
    after = rss()
    assert after - before < 4 * MiB, f"RSS grew {(after - before) / MiB:.1f} MiB over 1,000,000 calls"
