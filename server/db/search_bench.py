"""`python -m server.db.search_bench DSN [--runs N]`: median and p99 of `q` searches, from EXPLAIN ANALYZE.

Each term goes through the API's own normaliser (ProductQuery) and the repo's own statement (first page
with its count, then the page-only statement a known total allows), as Markdown (docs/query-plans.md).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys

import asyncpg

from server.catalog import repo
from server.catalog.query import ProductQuery

# (label, raw q as a shopper types it)
CASES: list[tuple[str, str]] = [
    ("a SKU", "SKU-0740839"),
    ("the same SKU in Arabic-Indic digits", "٠٧٤٠٨٣٩"),
    ("a Latin word (common)", "milk"),
    ("two Latin words", "crispy milk"),
    ("an Arabic word (common)", "حليب"),
    ("the same, with tashkeel", "حَلِيبٌ"),
    ("two Arabic words", "حليب مقرمش"),
    ("the same, with tashkeel and tatweel", "حَلِيـــبٌ مُقَرْمَش"),
]

_EXEC = re.compile(r"Execution Time: ([\d.]+) ms")


def _query(q: str) -> ProductQuery:
    params = {"page": 1, "page_size": 50, "category_id": None, "q": q}
    params |= {"min_price": None, "max_price": None, "in_stock": None, "sort": "name"}
    return ProductQuery.from_params(params)


async def _times(
    conn: asyncpg.Connection, flt: repo.ProductFilter, with_count: bool, runs: int
) -> list[float]:
    sql, args = repo.list_statement(flt, with_count=with_count)
    params = ["consumer", 50, 0, *args]
    await conn.fetch(sql, *params)  # warm-up
    out = []
    for _ in range(runs):
        rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *params)
        match = _EXEC.search("\n".join(r[0] for r in rows))
        out.append(float(match.group(1)) if match else 0.0)
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def report(dsn: str, runs: int) -> str:
    """Markdown table: per case the normalised term, matches, median and p99 ms with and without count."""
    conn = await asyncpg.connect(dsn, server_settings={"jit": "off"})
    try:
        out = [
            f"{runs} runs per statement.",
            "",
            "| case | q sent | term | matches | page 1 + count: median / p99 ms | page only: median / p99 ms"
            " |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for label, raw in CASES:
            flt = _query(raw).filter
            _, total = await repo.list_products(conn, price_list="consumer", flt=flt, limit=1, offset=0)
            counted = await _times(conn, flt, True, runs)
            paged = await _times(conn, flt, False, runs)
            out.append(
                f"| {label} | `{raw}` | `{flt.q}` | {total:,} | "
                f"{statistics.median(counted):.1f} / {_p99(counted):.1f} | "
                f"{statistics.median(paged):.1f} / {_p99(paged):.1f} |"
            )
        return "\n".join(out)
    finally:
        await conn.close()


def main() -> int:
    """Print the report for the database at DSN."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dsn")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    sys.stdout.write(asyncio.run(report(args.dsn, args.runs)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
