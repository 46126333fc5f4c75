"""RowStore on its own: tags, the byte bound and the two generations (server/catalog/rows.py)."""

from __future__ import annotations

from server.catalog.rows import ENTRY_OVERHEAD, RowStore, tag_of


def test_bytes_are_served_only_for_their_tag() -> None:
    store = RowStore(1 << 20)
    store.put(7, tag_of(3, False), b"seven")
    assert store.get(7, tag_of(3, False)) == b"seven"
    assert store.get(7, tag_of(3, True)) is None  # image flag flipped
    assert store.get(7, tag_of(4, False)) is None  # row changed
    assert store.get(8, tag_of(3, False)) is None
    assert store.get_many([7, 8, 7], [tag_of(3, False), 0, tag_of(5, False)]) == [b"seven", None, None]
    store.put(7, tag_of(4, False), b"seven'")
    assert store.get(7, tag_of(4, False)) == b"seven'"
    assert store.get(7, tag_of(3, False)) is None


def test_memory_stays_bounded_and_shown_rows_stay() -> None:
    budget = 64 * 1024
    store = RowStore(budget)
    hot = list(range(10))
    for pid in range(5000):
        store.put(pid + 100, 1, b"x" * 300)
        if pid % 50 == 0:  # the hot rows are shown now and then
            assert all(item is not None for item in store.get_many(hot, [1] * 10)) or pid == 0
        if pid == 0:
            for h in hot:
                store.put(h, 1, b"h" * 300)
    held = sum(len(e[1]) + ENTRY_OVERHEAD for gen in (store._young, store._old) for e in gen.values())
    assert held <= budget
    assert len(store) <= budget // (300 + ENTRY_OVERHEAD)
    assert store.get_many(hot, [1] * 10) == [b"h" * 300] * 10
    assert store.get(100, 1) is None  # long gone


def test_an_entry_larger_than_a_generation_is_never_kept() -> None:
    store = RowStore(1000)
    store.put(1, 1, b"y" * 600)
    assert store.get(1, 1) is None
    off = RowStore(0)
    off.put(1, 1, b"z")
    assert off.get(1, 1) is None and len(off) == 0
