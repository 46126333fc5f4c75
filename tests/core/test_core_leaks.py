"""Leak check: a million calls into each build leave the resident set size flat."""

from __future__ import annotations

import contextlib
import gc
from decimal import Decimal
from pathlib import Path

import psutil
import pytest
from core_ext_testlib import BASE_URL, META, Impl, make_entry, row

from core_ext import SerializationError

MiB = 1 << 20


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@pytest.mark.slow
def test_rss_flat_over_a_million_calls(impl: Impl, tmp_path: Path) -> None:
    for i in range(0, 200, 3):
        make_entry(tmp_path, f"z{i}.jpg", "file")
    ix = impl.ImageIndex(tmp_path, 0)
    ix.set_catalog({f"z{i}": i for i in range(200)})
    ids = list(range(100))
    # Fresh str objects per row, so any UTF-8 cache the serializer fills is exercised too.
    page = [
        row(i, f"z{i}", name=f'منتج {i} "q"\n', name_ar=f"عربي {i}", price=Decimal(i) / 4) for i in range(10)
    ]
    bad = [row(), row(name=1)]

    assert impl.serialize_items is not None and impl.join_items is not None
    serialize_items, join_items = impl.serialize_items, impl.join_items

    def one_round() -> None:  # 12 calls
        impl.serialize_page(page, ix, BASE_URL, META)
        with contextlib.suppress(SerializationError):
            impl.serialize_page(bad, ix, BASE_URL, META)
        join_items(serialize_items(page, ix, BASE_URL), META)
        with contextlib.suppress(SerializationError):
            serialize_items(bad, ix, BASE_URL)
        ix.has_many(ids)
        for i in range(6):
            ix.has(i)

    for _ in range(10_000):  # warm-up: allocator pools, interned objects, caches
        one_round()
    before = rss()
    for _ in range(100_000):
        one_round()
    after = rss()
    assert after - before < 4 * MiB, f"RSS grew {(after - before) / MiB:.1f} MiB over 1,200,000 calls"
