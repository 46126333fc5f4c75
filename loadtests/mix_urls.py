"""The shopper mix's URL list: what it is made of (read from a service's public API) and how it is drawn.

Product list pages over category x sort x page (page_size 20-100, pages skewed to the first few, some deep),
details uniform over every active product, categories pages, searches (words of product names and SKUs) and
filters (in_stock, price ranges), drawn with a seed: the same catalog and seed give the same list.
"""

from __future__ import annotations

import json
import math
import random
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

PRODUCTS = "/api/consumer/products"
CATEGORIES = "/api/consumer/categories"

# Share of each kind of request. The side-by-side mix keeps only what the seed's stack serves, in the same
# proportions among themselves.
FULL_MIX = {"list": 0.45, "detail": 0.30, "categories": 0.08, "search": 0.10, "filter": 0.07}
COMMON_MIX = {"list": 0.54, "detail": 0.36, "categories": 0.10}
FULL_SORTS = ("name", "-name", "price", "-price", "newest")
COMMON_SORTS = ("name", "price")  # the seed's stack knows these two (and its default, by id)
LIST_PAGE_SIZES = (20, 24, 48, 50, 100)
LIST_PAGE_SIZE_WEIGHTS = (30, 15, 15, 25, 15)
FIRST_PAGES = (1, 2, 3, 4, 5)
FIRST_PAGE_WEIGHTS = (50, 18, 9, 5, 4)  # the remaining 14 %: a deep page, uniform past page 5
DEEP_SHARE = 0.14
ALL_CATEGORIES_SHARE = 0.3  # list pages without category_id


@dataclass(frozen=True)
class Catalog:
    """What the URLs are made of, read from one service: every active id and some of its words."""

    product_ids: tuple[int, ...]
    skus: tuple[str, ...]
    words: tuple[str, ...]
    categories: tuple[tuple[int, int], ...]  # (id, product count), categories with products only
    prices: tuple[float, ...]  # sorted consumer prices
    total: int


def get_json(url: str, timeout: float = 30.0) -> Any:
    """The JSON document at `url`."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def read_catalog(base: str) -> Catalog:
    """Every active product (pages of 200) and every category, through the public API of `base`."""
    items: list[dict[str, Any]] = []
    page, pages = 1, 1
    while page <= pages:
        doc = get_json(f"{base}{PRODUCTS}?page={page}&page_size=200&sort=name")
        items += doc["items"]
        pages, page = int(doc["pages"]), page + 1
    if not items:
        raise SystemExit(f"bench_mix: {base} has no products: seed the catalog first")
    categories = [
        (int(c["id"]), int(c["product_count"]))
        for c in get_json(f"{base}{CATEGORIES}?page=1&page_size=200")["items"]
        if int(c.get("product_count") or 0) > 0
    ]
    words = {w.lower() for it in items for w in it["name"].split() if w.isalpha() and len(w) >= 4}
    return Catalog(
        product_ids=tuple(sorted(int(it["id"]) for it in items)),
        skus=tuple(sorted({it["sku"] for it in items if it.get("sku")})),
        words=tuple(sorted(words)),
        categories=tuple(sorted(categories)),
        prices=tuple(sorted(float(it["price"]) for it in items if it.get("price") is not None)),
        total=len(items),
    )


def _page(rnd: random.Random, pages: int) -> int:
    """Skewed to the first pages; DEEP_SHARE of draws a deep one (uniform past page 5)."""
    if pages > len(FIRST_PAGES) and rnd.random() < DEEP_SHARE:
        return rnd.randint(len(FIRST_PAGES) + 1, pages)
    page = rnd.choices(FIRST_PAGES, FIRST_PAGE_WEIGHTS)[0]
    return page if page <= pages else rnd.randint(1, pages)


def _price_range(rnd: random.Random, catalog: Catalog) -> dict[str, str]:
    prices = catalog.prices or (1.0, 100.0)
    lo, hi = sorted(rnd.sample(range(len(prices)), 2)) if len(prices) > 1 else (0, 0)
    shape = rnd.random()
    if shape < 0.2:
        return {"max_price": f"{math.ceil(prices[hi])}"}
    if shape < 0.4:
        return {"min_price": f"{math.floor(prices[lo])}"}
    return {"min_price": f"{math.floor(prices[lo])}", "max_price": f"{math.ceil(prices[hi])}"}


def _one(kind: str, rnd: random.Random, catalog: Catalog, sorts: Sequence[str]) -> str:
    """One request path of `kind`."""
    if kind == "detail":
        return f"{PRODUCTS}/{rnd.choice(catalog.product_ids)}"
    if kind == "categories":
        size = rnd.choice((20, 50, 100))
        pages = max(1, -(-len(catalog.categories) // size))
        page = 2 if pages > 1 and rnd.random() < 0.2 else 1
        return f"{CATEGORIES}?{urlencode({'page': page, 'page_size': size})}"
    size = rnd.choices(LIST_PAGE_SIZES, LIST_PAGE_SIZE_WEIGHTS)[0]
    query: dict[str, str | int] = {}
    count = catalog.total
    if kind == "list":
        if catalog.categories and rnd.random() >= ALL_CATEGORIES_SHARE:
            cat, count = rnd.choice(catalog.categories)
            query["category_id"] = cat
        query["sort"] = rnd.choice(sorts)
        query["page"] = _page(rnd, max(1, -(-count // size)))
    elif kind == "search":
        use_sku = catalog.skus and (not catalog.words or rnd.random() < 0.3)
        query["q"] = rnd.choice(catalog.skus) if use_sku else rnd.choice(catalog.words)
        query["sort"] = rnd.choice(sorts)
        query["page"] = 1 if rnd.random() < 0.85 else 2
        size = 20
    elif kind == "filter":
        shape = rnd.random()
        if shape < 0.35:
            query["in_stock"] = "true"
        elif shape < 0.7:
            query.update(_price_range(rnd, catalog))
        else:
            query["in_stock"] = "true"
            query.update(_price_range(rnd, catalog))
        if catalog.categories and rnd.random() < 0.5:
            query["category_id"] = rnd.choice(catalog.categories)[0]
        query["sort"] = rnd.choice(sorts)
        query["page"] = rnd.choices((1, 2, 3), (70, 20, 10))[0]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    query["page_size"] = size
    return f"{PRODUCTS}?{urlencode(query)}"


def build_urls(
    catalog: Catalog,
    count: int,
    seed: int = 1,
    mix: dict[str, float] | None = None,
    sorts: Sequence[str] = FULL_SORTS,
) -> list[tuple[str, str]]:
    """`count` (kind, path) pairs drawn with `seed`: the same catalog and seed give the same list."""
    shares = mix or FULL_MIX
    kinds, weights = list(shares), list(shares.values())
    rnd = random.Random(seed)
    drawn = rnd.choices(kinds, weights, k=count)
    return [(kind, _one(kind, rnd, catalog, sorts)) for kind in drawn]


def kind_of(path: str) -> str:
    """The kind of a request path of the mix (as build_urls drew it)."""
    route, _, query = path.partition("?")
    if route.startswith(CATEGORIES):
        return "categories"
    if route != PRODUCTS:
        return "detail"
    names = {pair.split("=", 1)[0] for pair in query.split("&")}
    if "q" in names:
        return "search"
    if names & {"in_stock", "min_price", "max_price"}:
        return "filter"
    return "list"


def describe(urls: Sequence[tuple[str, str]]) -> str:
    """One line: requests, distinct URLs, share of each kind."""
    kinds = Counter(kind for kind, _ in urls)
    shares = ", ".join(f"{k} {n / len(urls):.0%}" for k, n in kinds.most_common())
    return f"{len(urls):,} requests, {len({p for _, p in urls}):,} distinct URLs ({shares})"


def write_list(urls: Sequence[tuple[str, str]], path: Path) -> Path:
    """The paths, one per line, for bench_mix.lua."""
    path.write_text("".join(p + "\n" for _, p in urls), encoding="ascii")
    return path
