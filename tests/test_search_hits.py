"""The per-process memo of search hits (server/catalog/hits.py): bounded by entries and by ids, least
recently used first, keyed by the catalog version."""

from __future__ import annotations

from array import array

from server.catalog.hits import SearchHits


def ids(n: int) -> array[int]:
    return array("i", range(n))


def test_bounded_by_entries_least_recently_used_first() -> None:
    memo = SearchHits(max_entries=2, max_ids=100)
    memo.put(("e", 1, "milk"), ids(3))
    memo.put(("e", 1, "tea"), ids(4))
    assert memo.get(("e", 1, "milk")) == ids(3)  # now the most recent
    memo.put(("e", 1, "rice"), ids(5))
    assert memo.get(("e", 1, "tea")) is None
    assert memo.get(("e", 1, "milk")) == ids(3)
    assert memo.get(("e", 1, "rice")) == ids(5)
    assert (len(memo), memo.ids) == (2, 8)


def test_bounded_by_ids() -> None:
    memo = SearchHits(max_entries=10, max_ids=10)
    memo.put(("e", 1, "a"), ids(4))
    memo.put(("e", 1, "b"), ids(4))
    memo.put(("e", 1, "c"), ids(4))  # 12 > 10: the oldest goes
    assert memo.get(("e", 1, "a")) is None
    assert memo.ids == 8
    memo.put(("e", 1, "huge"), ids(11))  # larger than the whole budget: never kept, nothing evicted
    assert memo.get(("e", 1, "huge")) is None
    assert (len(memo), memo.ids) == (2, 8)


def test_keyed_by_version_and_off_when_zero() -> None:
    memo = SearchHits(max_entries=4, max_ids=100)
    memo.put(("e", 1, "milk"), ids(3))
    assert memo.get(("e", 2, "milk")) is None  # another catalog version: other hits
    assert memo.get(("f", 1, "milk")) is None  # another database
    assert memo.report() == {"entries": 1, "ids": 3, "hits": 0, "misses": 2}
    off = SearchHits(max_entries=0, max_ids=100)
    off.put(("e", 1, "milk"), ids(3))
    assert off.get(("e", 1, "milk")) is None
    assert len(off) == 0
