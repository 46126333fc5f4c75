"""Catalog logic: fetch with one query, serialize with core_ext (list) or orjson (detail, categories)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from core_ext import serialize_page
from server.cache import Made
from server.catalog import repo
from server.catalog.live import LiveCatalog
from server.catalog.query import CategoryQuery, ProductId, ProductQuery
from server.catalog.schemas import page_meta
from server.errors import NotFound
from server.resources import Resources

_U64 = (1 << 64) - 1


def product_not_found(product_id: int) -> NotFound:
    """The 404 of an unknown or inactive product."""
    return NotFound(f"Product {product_id} does not exist.", f"المنتج {product_id} غير موجود.")


@dataclass(frozen=True, slots=True)
class IndexedList:
    """A list answer computed from the index: the page's ids and the total, and what its bytes depend on
    beyond the query (`key`: the total, the ids and their row versions)."""

    ids: list[int]
    total: int
    key: str


def index_list(live: LiveCatalog, query: ProductQuery, only: Iterable[int] | None = None) -> IndexedList:
    """The page's ids and total from memory (no I/O); `only`: a search's hits (search_hits)."""
    ids, total = live.index.query(
        query.sort,
        query.offset,
        query.page_size,
        category=query.category_id,
        min_price=_cents(query.min_price, math.ceil),
        max_price=_cents(query.max_price, math.floor),
        in_stock=query.in_stock,
        only=only,
    )
    return IndexedList(ids, total, f"{total}|{live.stamp(ids)}")


async def search_hits(res: Resources, live: LiveCatalog, term: str) -> array[int]:
    """Ids of the active products a normalised `q` matches, for the version the index reflects: from the
    memo, else one query (its snapshot may be newer: then it is used once and remembered for that one)."""
    hits = live.hits.get((live.epoch, live.version, term))
    if hits is None:
        async with res.pool.acquire() as conn:
            epoch, version, hits = await repo.search_hits(conn, term)
        live.hits.put((epoch, version, term), hits)
    return hits


async def searched_page(res: Resources, live: LiveCatalog, query: ProductQuery) -> Made:
    """JSON bytes of a search's page: the ids it matches from SQL (one query, or none when remembered),
    filtered, sorted, paged and counted by the index, then the page's rows as for any list."""
    assert query.q is not None
    hits = await search_hits(res, live, query.q)
    return await indexed_page(res, query, index_list(live, query, hits))


async def indexed_page(res: Resources, query: ProductQuery, found: IndexedList) -> Made:
    """JSON bytes of the page the index chose: its rows by primary key (one query), serialized."""
    rows: list[Any] = []
    if found.ids:
        async with res.pool.acquire() as conn:
            fetched = await repo.page_by_ids(conn, res.settings.CONSUMER_PRICE_LIST, found.ids)
        by_id = {r[0]: r for r in fetched}
        if len(by_id) != len(found.ids):
            return await product_page(res, query)  # deleted since the index's version: SQL answers
        rows = [by_id[i] for i in found.ids]
    assert res.live is not None
    res.live.served += 1
    meta = page_meta(query.page, query.page_size, found.total)
    body = serialize_page(rows, res.images, res.settings.PUBLIC_BASE_URL, meta)
    return Made(body, shared=bool(rows))


async def product_page(res: Resources, query: ProductQuery) -> Made:
    """JSON bytes of one page of the product list from SQL (the reference; not shared beyond this process
    when empty)."""
    # Counts depend on the rows only: keyed by the catalog version, not by the image fingerprint.
    generation, key = f"{res.catalog.epoch}:{res.catalog.version}", query.total_key
    async with res.pool.acquire() as conn:
        rows, total = await repo.list_products(
            conn,
            price_list=res.settings.CONSUMER_PRICE_LIST,
            flt=query.filter,
            limit=query.page_size,
            offset=query.offset,
            known_total=res.cache.total(generation, key),
        )
    res.cache.remember_total(generation, key, total)
    meta = page_meta(query.page, query.page_size, total)
    body = serialize_page(rows, res.images, res.settings.PUBLIC_BASE_URL, meta)
    return Made(body, shared=bool(rows))


def _cents(value: Decimal | None, rounding: Any) -> int | None:
    # The bounds have at most 2 decimals (params), so this is exact; rounding keeps it right if not.
    return None if value is None else int(rounding(value * 100))


async def product_detail(res: Resources, query: ProductId) -> Made:
    """JSON bytes of one product with all consumer-visible prices; a 404 marker if absent or inactive."""
    product_id = query.id
    async with res.pool.acquire() as conn:
        row = await repo.get_product(conn, product_id)
    if row is None:
        return Made(b"", status=404)
    has_image = res.images.has(row["id"])
    prices = [
        {
            "price_list": code,
            "name": name,
            "name_ar": name_ar,
            "currency": currency,
            "price": format(price, "f"),
        }
        for code, name, name_ar, currency, price in row["prices"]
    ]
    main = next((p for p in prices if p["price_list"] == res.settings.CONSUMER_PRICE_LIST), None)
    category = (
        {"id": row["category_id"], "name": row["category_name"], "name_ar": row["category_name_ar"]}
        if row["category_id"] is not None
        else None
    )
    doc = {
        "id": row["id"],
        "zoho_item_id": row["zoho_item_id"],
        "sku": row["sku"],
        "name": row["name"],
        "name_ar": row["name_ar"],
        "category": category,
        "price": main["price"] if main else None,
        "currency": main["currency"] if main else None,
        "stock": row["stock_on_hand"],
        "in_stock": row["stock_on_hand"] > 0,
        "unit": row["unit"],
        "has_image": has_image,
        "image_url": image_url(res, row["zoho_item_id"]) if has_image else None,
        "description": row["description"],
        "description_ar": row["description_ar"],
        "prices": prices,
        "updated_at": row["updated_at"],
    }
    return Made(orjson.dumps(doc))


def image_url(res: Resources, zoho_item_id: str) -> str:
    """Public URL of a product's image (the same form core_ext.serialize_page writes)."""
    return f"{res.settings.PUBLIC_BASE_URL}/product-images/{zoho_item_id}.jpg"


@dataclass(frozen=True, slots=True)
class IndexedCategories:
    """A categories answer computed from the index: the page's rows (repo.CATEGORIES' columns,
    product_count last) and the total; `key`: what its bytes depend on beyond the query and the index's
    structure version (which the rows follow): the total and the page's counts."""

    rows: list[tuple[Any, ...]]
    total: int
    key: str


def index_categories(live: LiveCatalog, query: CategoryQuery) -> IndexedCategories:
    """One page of categories with product counts from memory (no I/O)."""
    page, total = live.category_page(query.parent_id, query.offset, query.page_size)
    counts = tuple(count for _, count in page)
    return IndexedCategories(
        [(*row, count) for row, count in page], total, f"{total}|{hash(counts) & _U64:x}"
    )


async def indexed_categories(res: Resources, query: CategoryQuery, found: IndexedCategories) -> Made:
    """JSON bytes of the categories page the index computed."""
    assert res.live is not None
    res.live.served += 1
    return _categories_body(query, found.rows, found.total)


async def category_page(res: Resources, query: CategoryQuery) -> Made:
    """JSON bytes of one page of categories with product counts from SQL (the reference)."""
    async with res.pool.acquire() as conn:
        rows, total = await repo.list_categories(
            conn, parent_id=query.parent_id, limit=query.page_size, offset=query.offset
        )
    return _categories_body(query, rows, total)


def _categories_body(query: CategoryQuery, rows: Sequence[Sequence[Any]], total: int) -> Made:
    # Both sources give repo.CATEGORIES' columns in its order, product_count last.
    items = [
        {
            "id": r[0],
            "zoho_category_id": r[1],
            "name": r[2],
            "name_ar": r[3],
            "parent_id": r[4],
            "sort_order": r[5],
            "product_count": r[6],
        }
        for r in rows
    ]
    body = orjson.dumps({"items": items, **page_meta(query.page, query.page_size, total)})
    return Made(body, shared=bool(items))
