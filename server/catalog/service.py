"""Catalog logic: fetch with one query, serialize with core_ext (list) or orjson (detail, categories)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import orjson

from core_ext import serialize_page
from server.cache import Made
from server.catalog import repo
from server.catalog.query import CategoryQuery, ProductId, ProductQuery
from server.catalog.schemas import page_meta
from server.errors import NotFound
from server.resources import Resources


def product_not_found(product_id: int) -> NotFound:
    """The 404 of an unknown or inactive product."""
    return NotFound(f"Product {product_id} does not exist.", f"المنتج {product_id} غير موجود.")


async def product_page(res: Resources, query: ProductQuery) -> Made:
    """JSON bytes of one page of the product list (not shared beyond this process when empty)."""
    # Counts depend on the rows only: keyed by the catalog version, not by the image fingerprint.
    generation, key = f"{res.catalog.epoch}:{res.catalog.version}", query.total_key
    live = res.live
    if live is not None and query.q is None and live.ready_for(res.catalog.epoch, res.catalog.version):
        page = await _indexed_page(res, query)
        if page is not None:
            rows, total = page
            live.served += 1
            res.cache.remember_total(generation, key, total)
            meta = page_meta(query.page, query.page_size, total)
            body = serialize_page(rows, res.images, res.settings.PUBLIC_BASE_URL, meta)
            return Made(body, shared=bool(rows))
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


async def _indexed_page(res: Resources, query: ProductQuery) -> tuple[list[Any], int] | None:
    """The page's rows and total from the in-memory index plus one primary-key query; None when the rows
    no longer all exist (the caller then asks SQL)."""
    assert res.live is not None
    ids, total = res.live.index.query(
        query.sort,
        query.offset,
        query.page_size,
        category=query.category_id,
        min_price=_cents(query.min_price, math.ceil),
        max_price=_cents(query.max_price, math.floor),
        in_stock=query.in_stock,
    )
    if not ids:
        return [], total
    async with res.pool.acquire() as conn:
        rows = await repo.page_by_ids(conn, res.settings.CONSUMER_PRICE_LIST, ids)
    if len(rows) != len(ids):
        return None  # deleted since the index's version: a newer version is on its way
    # The rows come by ascending id: put each where its id stands in the page (cheaper than a dict of
    # Records, and cheaper for PostgreSQL than returning them in the page's order).
    page: list[Any] = [None] * len(ids)
    for at, row in zip(sorted(range(len(ids)), key=ids.__getitem__), rows, strict=True):
        page[at] = row
    return page, total


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


async def category_page(res: Resources, query: CategoryQuery) -> Made:
    """JSON bytes of one page of categories with product counts."""
    async with res.pool.acquire() as conn:
        rows, total = await repo.list_categories(
            conn, parent_id=query.parent_id, limit=query.page_size, offset=query.offset
        )
    items = [
        {
            "id": r["id"],
            "zoho_category_id": r["zoho_category_id"],
            "name": r["name"],
            "name_ar": r["name_ar"],
            "parent_id": r["parent_id"],
            "sort_order": r["sort_order"],
            "product_count": r["product_count"],
        }
        for r in rows
    ]
    body = orjson.dumps({"items": items, **page_meta(query.page, query.page_size, total)})
    return Made(body, shared=bool(items))
