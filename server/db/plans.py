"""`python -m server.db.plans DSN`: EXPLAIN ANALYZE of every filter and sort of the product list, as
Markdown (the source of docs/query-plans.md). Each statement runs once to warm up, then is explained."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from decimal import Decimal
from typing import Any

import asyncpg

from server.catalog import repo

# (label, filter, page, known total?) on the seeded demo catalog (`python -m server seed`).
CASES: list[tuple[str, repo.ProductFilter, int, bool]] = [
    ("default list (sort=name), page 1", repo.ProductFilter(), 1, False),
    ("default list, page 2 (total known)", repo.ProductFilter(), 2, True),
    ("sort=-name, page 2", repo.ProductFilter(sort="-name"), 2, True),
    ("sort=newest, page 2", repo.ProductFilter(sort="newest"), 2, True),
    ("sort=price, page 2", repo.ProductFilter(sort="price"), 2, True),
    ("sort=-price, page 2", repo.ProductFilter(sort="-price"), 2, True),
    ("category_id=1 (a department)", repo.ProductFilter(category_id=1), 1, False),
    ("q=0074839 (one SKU)", repo.ProductFilter(q="0074839"), 1, False),
    ("q=crispy milk (name)", repo.ProductFilter(q="crispy milk"), 1, False),
    ("q=حليب مقرمش (Arabic name)", repo.ProductFilter(q="حليب مقرمش"), 1, False),
    ("q=milk (common word)", repo.ProductFilter(q="milk"), 1, False),
    (
        "min_price=10, max_price=12",
        repo.ProductFilter(min_price=Decimal(10), max_price=Decimal(12)),
        1,
        False,
    ),
    ("in_stock=false", repo.ProductFilter(in_stock=False), 1, False),
    (
        "in_stock=true + price 10-12",
        repo.ProductFilter(in_stock=True, min_price=Decimal(10), max_price=Decimal(12)),
        1,
        False,
    ),
    (
        "category_id=1 + q=milk + sort=-price",
        repo.ProductFilter(category_id=1, q="milk", sort="-price"),
        1,
        False,
    ),
]

_INDEX = re.compile(r"(?:Index|Index Only|Bitmap Index) Scan(?: Backward)? (?:using|on) (\w+)")
_EXEC = re.compile(r"Execution Time: ([\d.]+) ms")


async def explain(conn: Any, flt: repo.ProductFilter, page: int, known: bool) -> tuple[str, float, list[str]]:
    """(plan text, execution ms, indexes used) of one page of the list."""
    sql, args = repo.list_statement(flt, with_count=not known)
    params = ["consumer", 50, (page - 1) * 50, *args]
    await conn.fetch(sql, *params)
    rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *params)
    text = "\n".join(r[0] for r in rows)
    match = _EXEC.search(text)
    return text, float(match.group(1)) if match else 0.0, sorted(set(_INDEX.findall(text)))


async def report(dsn: str, plans: bool) -> str:
    """Markdown: one table row per case (time, indexes), then the plans when asked."""
    conn = await asyncpg.connect(dsn, server_settings={"jit": "off"})
    try:
        _, active = await repo.list_products(
            conn, price_list="consumer", flt=repo.ProductFilter(), limit=1, offset=0
        )
        out = [f"{active:,} active products.", "", "| case | ms | indexes used |", "| --- | --- | --- |"]
        details = []
        for label, flt, page, known in CASES:
            text, ms, indexes = await explain(conn, flt, page, known)
            out.append(f"| {label} | {ms:.1f} | {', '.join(f'`{i}`' for i in indexes) or 'none'} |")
            details += [f"#### {label}", "", "```", text, "```", ""]
        return "\n".join(out + (["", *details] if plans else []))
    finally:
        await conn.close()


def main() -> int:
    """Print the report for the database at DSN."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dsn")
    parser.add_argument("--plans", action="store_true", help="also print every plan")
    args = parser.parse_args()
    sys.stdout.write(asyncio.run(report(args.dsn, args.plans)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
