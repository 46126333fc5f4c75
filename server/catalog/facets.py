"""Facets of the product list (`facets=category,price,in_stock`): the counts as plain data, from the index or
from SQL, and their one rendering, so both paths answer the same bytes.

The rule (core_ext.CatalogIndex.facets, repo._FACETS): over the active products matching category_id and q,
- `category` counts, per active child of category_id (per active top-level category without one), the
  products of its whole subtree that pass the price and stock filters: each count is the total
  `category_id=<child>` would give;
- `price` counts per bucket of FACET_PRICE_BUCKETS those that pass the stock filter (not the price filter),
  and apart (`unpriced`) those without a consumer price;
- `in_stock` counts in and out of stock among those that pass the price filter (not the stock filter).
A price filter never matches an unpriced product, so with one set they are in no category or stock count;
without one they are in every count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from server.catalog.live import digest

ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class FacetCounts:
    """Every facet's counts for one filter (plain data: what the index or SQL computed)."""

    categories: tuple[tuple[int, int], ...]  # (category id, count) per head, in no particular order
    prices: tuple[int, ...]  # per bucket: len(bounds) + 1
    unpriced: int
    in_stock: int
    out_of_stock: int

    def digest(self) -> str:
        """A 64-bit hash of every count (live.digest: the same in every process)."""
        heads = tuple(sorted(self.categories))
        return digest((heads, self.prices, self.unpriced, self.in_stock, self.out_of_stock))

    @classmethod
    def from_index(cls, found: dict[str, Any]) -> FacetCounts:
        """From core_ext.CatalogIndex.facets."""
        return cls(
            categories=tuple(found["categories"]),
            prices=tuple(found["prices"]),
            unpriced=found["no_price"],
            in_stock=found["in_stock"],
            out_of_stock=found["out_of_stock"],
        )

    @classmethod
    def from_rows(cls, rows: Sequence[asyncpg.Record], buckets: int) -> tuple[FacetCounts, list[Any]]:
        """From repo.facet_counts' rows: the counts and the heads' (id, name, name_ar) in order."""
        heads = [(r[2], r[4], r[5]) for r in rows if r[0] == 0]
        prices = [0] * buckets
        unpriced = 0
        stock = {0: 0, 1: 0}
        for facet, _ord, key, n, _name, _name_ar in rows:
            if facet == 1 and key is None:
                unpriced = n
            elif facet == 1:
                prices[key] = n
            elif facet == 2:
                stock[key] = n
        counts = cls(
            categories=tuple((r[2], r[3]) for r in rows if r[0] == 0),
            prices=tuple(prices),
            unpriced=unpriced,
            in_stock=stock[1],
            out_of_stock=stock[0],
        )
        return counts, heads


def cents(bounds: Sequence[Decimal]) -> list[int]:
    """Bucket bounds as the index takes them (the setting has at most 2 decimals: exact)."""
    return [int(b * 100) for b in bounds]


def render(
    wanted: Sequence[str], counts: FacetCounts, heads: Sequence[Any], bounds: Sequence[Decimal]
) -> dict[str, Any]:
    """The `facets` object: the facets asked for, in a fixed order; `heads` are (id, name, name_ar) of the
    category facet's entries in display order (the categories' order)."""
    out: dict[str, Any] = {}
    if "category" in wanted:
        by_id = dict(counts.categories)
        out["category"] = [
            {"id": cid, "name": name, "name_ar": name_ar, "count": by_id.get(cid, 0)}
            for cid, name, name_ar in heads
        ]
    if "price" in wanted:
        lows = [ZERO, *bounds]
        highs: list[Decimal | None] = [*bounds, None]
        out["price"] = {
            "buckets": [
                {"min": format(lo, "f"), "max": None if hi is None else format(hi, "f"), "count": n}
                for lo, hi, n in zip(lows, highs, counts.prices, strict=True)
            ],
            "unpriced": counts.unpriced,
        }
    if "in_stock" in wanted:
        out["in_stock"] = [
            {"value": True, "count": counts.in_stock},
            {"value": False, "count": counts.out_of_stock},
        ]
    return out
