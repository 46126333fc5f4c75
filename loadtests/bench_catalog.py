"""CatalogIndex micro-benchmarks (the catalog section of ``bench_core.py``): compiled and pure builds.

A synthetic catalog shaped like the seed (8 departments x 5 sub-categories, 3 % without a consumer price,
15 % out of stock, 2 % inactive, duplicate names), then a random mix of list queries (every sort, offsets
0 / 100,000 / the last page, sparse filters, search hits as ``only=``), category counts, facets and
updates. Latencies are per call in the core (no HTTP, no SQL); printed, never asserted.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SORTS = ("name", "-name", "price", "-price", "newest")
BOUNDS = [1_000, 5_000, 10_000, 50_000]  # cents
DEPARTMENTS = list(range(1, 9))
LEAVES = list(range(10, 50))


def categories() -> tuple[list[int], list[int | None], list[bool]]:
    """8 roots, 5 active leaves under each."""
    ids = DEPARTMENTS + LEAVES
    parents: list[int | None] = [None] * len(DEPARTMENTS) + [1 + (c - 10) // 5 for c in LEAVES]
    return ids, parents, [True] * len(ids)


def columns(n: int, seed: int = 1) -> tuple[list[Any], ...]:
    """Column lists of ``n`` products with ids 1..n."""
    rnd = random.Random(seed)
    ids = list(range(1, n + 1))
    return (
        ids,
        [rnd.choice(LEAVES) for _ in ids],
        [None if rnd.random() < 0.03 else rnd.randrange(100, 100_000) for _ in ids],
        [rnd.randrange(-3, 17) for _ in ids],
        [1_600_000_000_000_000 + rnd.randrange(10**13) for _ in ids],
        [rnd.randrange(n // 2) for _ in ids],  # about one name in four shared
        [rnd.random() > 0.02 for _ in ids],
    )


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in seconds."""
    s = sorted(samples)
    return s[len(s) // 2], s[min(len(s) - 1, (len(s) * 99) // 100)], s[-1]


def timed(fn: Callable[[], object], times: int) -> list[float]:
    """CPU seconds of each call (this thread's clock: time spent descheduled on a busy machine does not
    count; the wall-clock tail is printed separately for the query mix)."""
    out = []
    for _ in range(times):
        t = time.thread_time()
        fn()
        out.append(time.thread_time() - t)
    return out


def query_mix(index: Any, n: int, rnd: random.Random) -> list[tuple[str, Callable[[], object]]]:
    """Named queries: every kind of filter, with a random sort and a random page (first, 100,000th, last)."""
    hits = rnd.sample(range(1, n + 1), min(n, 2_000))
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("no filter", {}),
        ("department", {"category": rnd.choice(DEPARTMENTS)}),
        ("sub-category", {"category": rnd.choice(LEAVES)}),
        (
            "sparse: leaf+stock+price",
            {"category": rnd.choice(LEAVES), "in_stock": True, "min_price": 5_000, "max_price": 6_000},
        ),
        ("price range", {"min_price": 1_000, "max_price": 60_000}),
        ("out of stock", {"in_stock": False}),
        ("search hits (only=2,000)", {"only": hits}),
    ]
    out = []
    for name, filters in kinds:
        total = index.count(**filters)
        for sort in SORTS:
            for offset in {0, min(100_000, max(total - 50, 0)), max(total - 50, 0)}:
                out.append((name, lambda s=sort, o=offset, f=filters: index.query(s, o, 50, **f)))
    return out


def run(build: str, cls: Any, n: int, cols: tuple[list[Any], ...], rounds: int) -> list[tuple[str, str, str]]:
    """Rows (what, build, figures) for one build on ``n`` products."""
    rows: list[tuple[str, str, str]] = []
    rnd = random.Random(2)

    def add(what: str, samples: list[float], target: str = "") -> None:
        p50, p99, top = percentiles(samples)
        rows.append((what, build, f"{fmt(p50)} {fmt(p99)} {fmt(top)}  {target}"))

    index = cls()
    index.set_categories(*categories())
    t = time.perf_counter()
    index.build(*cols)
    rows.append((f"build, {n:,} products", build, f"{fmt(time.perf_counter() - t)}  (target < 3 s)"))
    rows.append(("memory per product", build, f"{index.memory_bytes / n:.1f} B  (target <= 64 B)"))

    mix = query_mix(index, n, rnd)
    by_kind: dict[str, list[float]] = {}
    every: list[float] = []
    wall: list[float] = []
    for _ in range(rounds):
        rnd.shuffle(mix)
        for name, fn in mix:
            w = time.perf_counter()
            t = time.thread_time()
            fn()
            dt = time.thread_time() - t
            wall.append(time.perf_counter() - w)
            by_kind.setdefault(name, []).append(dt)
            every.append(dt)
    add(f"query: all {len(every)}, CPU time", every, "(target p99 < 5 ms)")
    add("query: the same, wall clock", wall)
    # The compiled build keeps the last 8 filters' matches, so the mix above is mostly warm; here every
    # query is cold (set_categories drops the kept matches, outside the timed call).
    cold: list[float] = []
    for _ in range(rounds):
        for _, fn in mix:
            index.set_categories(*categories())
            t = time.thread_time()
            fn()
            cold.append(time.thread_time() - t)
    add(f"query: the same {len(cold)}, each cold, CPU time", cold, "(target p99 < 5 ms)")
    for name, samples in by_kind.items():
        add(f"  {name}", samples)
    add("category_counts()", timed(index.category_counts, 5 * rounds), "(target < 10 ms)")
    add(
        "facets(), no filter",
        timed(lambda: index.facets(price_bounds=BOUNDS), 3 * rounds),
        "(target < 10 ms)",
    )
    dept = DEPARTMENTS[0]
    add(
        "facets(category=department, in_stock)",
        timed(lambda: index.facets(category=dept, in_stock=True, price_bounds=BOUNDS), 3 * rounds),
        "(target < 10 ms)",
    )

    ids, cats, prices, _, created, ranks, active = cols

    def upsert_stock() -> None:
        k = rnd.randrange(n)
        index.upsert(ids[k], cats[k], prices[k], rnd.randrange(-2, 5), created[k], ranks[k], active[k])

    def upsert_price() -> None:
        k = rnd.randrange(n)
        index.upsert(ids[k], cats[k], rnd.randrange(100, 100_000), 1, created[k], ranks[k], active[k])

    def insert_remove() -> None:
        index.upsert(n + 1, LEAVES[0], rnd.randrange(100, 100_000), 1, rnd.randrange(10**16), 0, True)
        index.remove(n + 1)

    add("upsert: stock only", timed(upsert_stock, 200 * rounds), "(target < 50 µs)")
    add("upsert: price (moves in the price order)", timed(upsert_price, 50 * rounds), "(target < 1 ms)")
    add("upsert new + remove (every order)", timed(insert_remove, 20 * rounds))
    return rows


def fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds:8.2f} s "


def main(products: int = 1_000_000, pure_products: int = 100_000) -> None:
    """Print the catalog section: compiled on ``products``, pure on ``pure_products``."""
    from core_ext import _catalog_py

    try:
        from core_ext import _catalog
    except ImportError:
        raise SystemExit("compiled core_ext not built: run `make ext` first") from None

    rows = run("compiled", _catalog.CatalogIndex, products, columns(products), rounds=6)
    rows += run("pure", _catalog_py.CatalogIndex, pure_products, columns(pure_products), rounds=1)
    width = max(len(r[0]) for r in rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"CatalogIndex: compiled on {products:,} products, pure on {pure_products:,}; load average {load}")
    print(f"{'benchmark':<{width}}  {'build':<8}  figures (p50 p99 max, or one value)")
    print(f"{'-' * width}  {'-' * 8}  {'-' * 40}")
    for what, build, value in rows:
        print(f"{what:<{width}}  {build:<8}  {value}")


if __name__ == "__main__":
    # python loadtests/bench_catalog.py [PRODUCTS [PURE_PRODUCTS]]: this section alone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(*(int(a) for a in sys.argv[1:3]))
