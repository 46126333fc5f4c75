"""Micro-benchmarks of core_ext, compiled and pure builds side by side: ``python loadtests/bench_core.py``.

Prints one table (best of N, timeit style) and the ratios the design asks for, then the CatalogIndex
section (``bench_catalog.py``: latency percentiles at 1,000,000 products). Figures are printed, never
asserted: they depend on the machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core_ext import _images_py, _pages_py

try:
    from core_ext import _images, _pages
except ImportError:
    sys.exit("compiled core_ext not built: run `python setup.py build_ext --inplace` first")

BASE_URL = "https://shop.example"
META = {"page": 1, "page_size": 100, "total": 123_456, "pages": 1235}
BUILDS = (
    ("compiled", _images.ImageIndex, _pages.serialize_page),
    ("pure", _images_py.ImageIndex, _pages_py.serialize_page),
)


def best(fn: Callable[[], object], repeat: int = 7) -> float:
    """Seconds per call: best of ``repeat`` runs of an autoranged loop."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number


def make_folder(root: Path, n: int) -> tuple[Path, dict[str, int]]:
    folder = root / f"images-{n}"
    folder.mkdir()
    for i in range(n):
        os.close(os.open(folder / f"{i}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
    return folder, {str(i): i for i in range(n)}


def make_rows(n: int) -> list[tuple[Any, ...]]:
    return [
        (
            i,
            str(i),
            f"SKU-{i:06d}",
            f"Stainless steel widget, model {i} (pack of 4)",
            f"أداة من الفولاذ المقاوم للصدأ، طراز {i}",
            i % 40 or None,
            "Kitchen & dining",
            "المطبخ وتناول الطعام",
            Decimal(f"{i % 997}.{i % 100:02d}"),
            "SAR",
            i % 13 - 2,
            "pc",
        )
        for i in range(n)
    ]


def straightforward(rows: Sequence[Sequence[Any]], index: Any, base_url: str, meta: dict[str, Any]) -> bytes:
    """The approach serialize_page replaces: a dict per row, then orjson.dumps."""
    flags = index.has_many([r[0] for r in rows])
    items = [
        {
            "id": r[0],
            "zoho_item_id": r[1],
            "sku": r[2],
            "name": r[3],
            "name_ar": r[4],
            "category": None if r[5] is None else {"id": r[5], "name": r[6], "name_ar": r[7]},
            "price": None if r[8] is None else format(r[8], "f"),
            "currency": r[9],
            "stock": r[10],
            "in_stock": r[10] > 0,
            "unit": r[11],
            "has_image": flag,
            "image_url": f"{base_url}/product-images/{r[1]}.jpg" if flag else None,
        }
        for r, flag in zip(rows, flags, strict=True)
    ]
    return orjson.dumps({"items": items, **meta})


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:10.2f} µs"
    return f"{seconds * 1e3:10.2f} ms"


def main() -> None:
    rows: list[tuple[str, str, str]] = []
    results: dict[str, float] = {}

    def record(key: str, what: str, build: str, seconds: float) -> None:
        results[key] = seconds
        rows.append((what, build, fmt(seconds)))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder10k, catalog10k = make_folder(root, 10_000)
        folder100k, catalog100k = make_folder(root, 100_000)
        ids = list(range(0, 20_000, 200))  # 100 ids, half of them with an image

        for build, image_index, _ in BUILDS:
            ix = image_index(folder10k, 1.0)
            ix.set_catalog(catalog10k)
            record(f"has_many/{build}", "has_many(100 ids)", build, best(partial(ix.has_many, ids)))

        paths = [os.path.join(folder10k, f"{i}.jpg") for i in ids]

        def old_way() -> list[bool]:
            return [os.path.exists(p) or os.path.islink(p) for p in paths]

        record("old", "100 x exists() or islink()", "os.path", best(old_way))

        for n, folder, catalog in ((10_000, folder10k, catalog10k), (100_000, folder100k, catalog100k)):
            for build, image_index, _ in BUILDS:
                ix = image_index(folder, 1.0)
                ix.set_catalog(catalog)
                seconds = best(partial(ix.refresh, force=True), repeat=5)
                record(f"rescan{n}/{build}", f"rescan, {n:,} entries", build, seconds)

        page = make_rows(100)
        index = _images.ImageIndex(folder10k, 1.0)
        index.set_catalog(catalog10k)
        expected = straightforward(page, index, BASE_URL, META)
        for build, _, serialize in BUILDS:
            assert serialize(page, index, BASE_URL, META) == expected
            seconds = best(partial(serialize, page, index, BASE_URL, META))
            record(f"page/{build}", "serialize_page(100 rows)", build, seconds)
        record(
            "straight",
            "dicts + orjson.dumps (100 rows)",
            "baseline",
            best(lambda: straightforward(page, index, BASE_URL, META)),
        )

    for build, image_index, _ in BUILDS:
        big = image_index(os.path.join(tempfile.gettempdir(), "no-such-folder"), 1.0)
        big.set_catalog({str(i): i for i in range(1_000_000)})
        rows.append(("nbytes, 1,000,000 products", build, f"{big.nbytes:>10,} B"))

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'build':<8}  {'best':>13}")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 13}")
    for what, build, value in rows:
        print(f"{what:<{width}}  {build:<8}  {value:>13}")
    print()
    has_many = results["has_many/compiled"]
    print(
        f"compiled has_many vs old way:        {results['old'] / has_many:8.1f}x faster "
        f"(target >= 50x; {has_many * 1e6:.2f} µs, target < 10 µs)"
    )
    print(f"compiled has_many vs pure has_many:  {results['has_many/pure'] / has_many:8.1f}x faster")
    speedup = results["straight"] / results["page/compiled"]
    print(f"compiled serialize_page vs dicts+orjson: {speedup:5.1f}x faster (target >= 2x)")
    print(f"pure serialize_page vs dicts+orjson:     {results['straight'] / results['page/pure']:5.2f}x")
    for n in (10_000, 100_000):
        speedup = results[f"rescan{n}/pure"] / results[f"rescan{n}/compiled"]
        print(f"compiled rescan vs pure, {n:,} entries: {speedup:5.1f}x faster")


if __name__ == "__main__":
    main()
    print()
    from bench_catalog import main as catalog_section

    catalog_section()
