"""core_ext.SearchIndex at catalog scale: load time, memory per product, and search time per term, compiled
vs pure, on a database's real search texts (--dsn) or on texts made like the demo catalog's.

    python -m loadtests.bench_search [--dsn postgresql://.../scale1m] [--products 1000000]

Each term is searched 7 times; the best and the worst time are printed (the process is alone in its core
only at best on this shared machine), with the number of products it matches.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from core_ext import _search_py
from server import seed
from server.catalog.search import normalise

TERMS = (
    "sku",
    "000",
    "sku-0000123",
    "juice",
    "fresh",
    "h j",
    "tea",
    "ate",
    "طازج",
    "عصير",
    "ير ",
    "ي 7",
    "xyz",
)


def demo_texts(n: int) -> list[bytes]:
    """Search texts shaped like the demo catalog's (name, SKU and Arabic name, normalised)."""
    rng = random.Random(1)
    out = []
    for i in range(1, n + 1):
        (adj, adj_ar), (noun, noun_ar) = rng.choice(seed._ADJECTIVES), rng.choice(seed._NOUNS)
        size = rng.choice((250, 500, 750, 1000))
        text = f"{adj} {noun} {size}\x1fsku-{i:07d}\x1f{noun_ar} {adj_ar} {size}"
        out.append(normalise(text).encode())
    return out


async def db_texts(dsn: str) -> list[bytes]:
    """Every product's search text, in id order."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT convert_to(search_text, 'UTF8') FROM products ORDER BY id")
    finally:
        await conn.close()
    return [r[0] for r in rows]


def run(name: str, make: Callable[[], Any], texts: list[bytes], rounds: int) -> None:
    """Print one build's load time, memory and search times."""
    index = make()
    started = time.perf_counter()
    for k in range(0, len(texts), 50_000):  # as LiveCatalog loads it: one chunk of the cursor at a time
        index.set_many(range(k + 1, k + 1 + len(texts[k : k + 50_000])), texts[k : k + 50_000])
    index.trim()
    load = time.perf_counter() - started
    print(
        f"{name}: {len(texts):,} texts loaded in {load:.2f} s, {index.memory_bytes / len(texts):.1f} B"
        f" a product ({sum(map(len, texts)) / len(texts):.1f} B of text)"
    )
    for term in TERMS:
        raw = normalise(term).encode()
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            hits = index.search(raw)
            times.append((time.perf_counter() - started) * 1000)
        print(f"  {term!r:16} {len(hits):>9,} hits  best {min(times):7.2f} ms  worst {max(times):7.2f} ms")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="read the search texts of this database's products")
    parser.add_argument("--products", type=int, default=1_000_000, help="demo texts without --dsn")
    args = parser.parse_args(argv)
    texts = asyncio.run(db_texts(args.dsn)) if args.dsn else demo_texts(args.products)
    try:
        from core_ext import _search
    except ImportError:
        print("compiled core_ext not built: pure build only")
    else:
        run("compiled", _search.SearchIndex, texts, 7)
    run("pure", _search_py.SearchIndex, texts, 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
