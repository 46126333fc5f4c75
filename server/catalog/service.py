"""Catalog logic: fetch with one query, serialize with core_ext (list) or orjson (detail, categories)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import orjson

from core_ext import ImageIndex, join_items, serialize_page
from server.cache import Made, PageCache
from server.catalog import repo
from server.catalog.facets import FacetCounts, cents, render
from server.catalog.feed import CatalogState
from server.catalog.live import LiveCatalog, digest
from server.catalog.query import CategoryQuery, ProductId, ProductQuery, entry_sku
from server.catalog.rows import fetch_items
from server.catalog.schemas import page_meta
from server.catalog.search import normalise
from server.db.pool import ServicePool
from server.errors import NotFound
from server.settings import Settings


class Resources(Protocol):
    """What the catalog's services use of a process's resources (server.resources.Resources has it all;
    the catalog does not import it: resources build the catalog's feed, not the other way round)."""

    settings: Settings
    pool: ServicePool
    images: ImageIndex
    cache: PageCache

    @property
    def catalog(self) -> CatalogState: ...

    @property
    def live(self) -> LiveCatalog | None: ...


def product_not_found(product_id: int) -> NotFound:
    """The 404 of an unknown or inactive product."""
    return NotFound(f"Product {product_id} does not exist.", f"المنتج {product_id} غير موجود.")


async def product_page(res: Resources, query: ProductQuery) -> Made:
    """JSON bytes of one page of the product list (or a batch) from SQL, the reference (not shared beyond
    this process when empty)."""
    if query.batch:
        return await product_batch(res, query)
    bounds = res.settings.FACET_PRICE_BUCKETS
    # Counts depend on the rows only: keyed by the catalog version, not by the image fingerprint.
    generation, key = f"{res.catalog.epoch}:{res.catalog.version}", query.total_key
    facets = None
    async with res.pool.acquire() as conn:
        rows, total = await repo.list_products(
            conn,
            price_list=res.settings.CONSUMER_PRICE_LIST,
            flt=query.filter,
            limit=query.page_size,
            offset=query.offset,
            known_total=res.cache.total(generation, key),
        )
        if query.facets:
            found = await repo.facet_counts(
                conn, price_list=res.settings.CONSUMER_PRICE_LIST, flt=query.filter, bounds=list(bounds)
            )
            counts, heads = FacetCounts.from_rows(found, len(bounds) + 1)
            facets = render(query.facets, counts, heads, bounds)
    res.cache.remember_total(generation, key, total)
    return _page_body(res, query, rows, total, facets)


def _page_body(
    res: Resources, query: ProductQuery, rows: list[Any], total: int, facets: dict[str, Any] | None
) -> Made:
    meta: dict[str, Any] = page_meta(query.page, query.page_size, total)
    if facets is not None:
        meta["facets"] = facets
    body = serialize_page(rows, res.images, res.settings.PUBLIC_BASE_URL, meta)
    return Made(body, shared=bool(rows))


def _cents(value: Decimal | None, rounding: Any) -> int | None:
    # The bounds have at most 2 decimals (params), so this is exact; rounding keeps it right if not.
    return None if value is None else int(rounding(value * 100))


@dataclass(frozen=True, slots=True)
class IndexAnswer:
    """What the in-memory index computed for one list query: the page's ids, the total, the facets, and
    what the answer's bytes depend on beyond the query (`stamp`: all of these and the ids' row versions;
    int tuples hash alike in every process)."""

    ids: list[int]
    total: int
    facets: FacetCounts | None
    stamp: str


def index_answer(
    live: LiveCatalog, query: ProductQuery, bounds: Sequence[Decimal], only: Iterable[int] | None = None
) -> IndexAnswer:
    """The index's side of a list answer (no I/O): ids in page order, total, facet counts if asked for;
    `only`: a search's hits (search_hits)."""
    index = live.index
    filters: dict[str, Any] = {
        "category": query.category_id,
        "min_price": _cents(query.min_price, math.ceil),
        "max_price": _cents(query.max_price, math.floor),
        "in_stock": query.in_stock,
        "only": only,
    }
    ids, total = index.query(query.sort, query.offset, query.page_size, **filters)
    facets = None
    if query.facets:
        facets = FacetCounts.from_index(index.facets(**filters, price_bounds=cents(bounds)))
    stamp = f"{total}|{live.stamp(ids)}"
    if facets is not None:
        stamp += f"|{facets.digest()}"
    return IndexAnswer(ids, total, facets, stamp)


def search_hits(live: LiveCatalog, term: str) -> array[int]:
    """Ids of the products whose search text holds a normalised `q` (active or not: the index keeps the
    active ones), at the version the index reflects, with no I/O: from the memo (kept across versions that
    changed no searchable text and no product's presence), else a scan of the in-memory search texts."""
    key = (live.epoch, live.search_version, term)
    hits = live.hits.get(key)
    if hits is None:
        # A lone surrogate (which no stored text holds) encodes to bytes no UTF-8 text holds: no match.
        hits = live.search.search(term.encode("utf-8", "surrogatepass"))
        live.hits.put(key, hits)
    return hits


async def indexed_page(res: Resources, query: ProductQuery, answer: IndexAnswer) -> Made:
    """JSON bytes of the page the index chose: its items from the row store, those it lacks by primary key
    (one query), written with core_ext.join_items; the category facet's names from memory."""
    live = res.live
    assert live is not None
    items = await page_items(res, live, answer.ids)
    if items is None:
        return await product_page(res, query)  # deleted since the index's version: SQL answers
    live.served += 1
    meta: dict[str, Any] = page_meta(query.page, query.page_size, answer.total)
    if answer.facets is not None:
        heads = []
        if "category" in query.facets:
            heads = live.facet_heads(cid for cid, _ in answer.facets.categories)
        meta["facets"] = render(query.facets, answer.facets, heads, res.settings.FACET_PRICE_BUCKETS)
    return Made(join_items(items, meta), shared=bool(items))


async def page_items(res: Resources, live: LiveCatalog, ids: list[int]) -> list[bytes] | None:
    """The list items of these products in order: from the row store, the rest by primary key (one query,
    then kept); None when some no longer exist (the caller then asks SQL)."""
    if not ids:
        return []
    store = live.items  # the store of this state: a newer one (category change) must not get these rows
    flags = res.images.has_many(ids)
    tags = live.row_tags(ids, flags)
    found = store.get_many(ids, tags)
    missing = [k for k, item in enumerate(found) if item is None]
    if not missing:
        return found  # type: ignore[return-value]  # no None left
    wanted, wanted_flags = [ids[k] for k in missing], [flags[k] for k in missing]
    s = res.settings
    async with res.pool.acquire() as conn:
        made = await fetch_items(conn, s.CONSUMER_PRICE_LIST, s.PUBLIC_BASE_URL, wanted, wanted_flags)
    if made is None:
        return None  # deleted since the index's version: a newer version is on its way
    # The tags were read before the query, from a version no newer than its snapshot, so a row kept under
    # its tag is never older than the state the tag names.
    for k, item in zip(missing, made, strict=True):
        found[k] = item
        store.put(ids[k], tags[k], item)
    return found  # type: ignore[return-value]


def batch_ids(query: ProductQuery) -> list[int] | None:
    """The product ids of a batch that names no SKU (None when it does: only SQL can resolve those)."""
    if any(entry_sku(e) is not None for e in query.ids):
        return None
    return [int(e) for e in query.ids]


async def product_batch(res: Resources, query: ProductQuery) -> Made:
    """JSON bytes of the batch `ids=`: the products asked for, in order, each once, and the entries that
    match no active product (one query)."""
    ids = [int(e) for e in query.ids if entry_sku(e) is None]
    skus = [sku for e in query.ids if (sku := entry_sku(e)) is not None]
    async with res.pool.acquire() as conn:
        rows = await repo.products_by_keys(conn, res.settings.CONSUMER_PRICE_LIST, ids, skus)
    by_id = {r[0]: r for r in rows}
    by_sku: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r[0]):  # a SKU shared by several products: the lowest id
        if row[2] is not None:
            by_sku.setdefault(normalise(row[2]), row)
    items: dict[int, Any] = {}
    missing: list[str] = []
    for entry in query.ids:
        sku = entry_sku(entry)
        row = by_id.get(int(entry)) if sku is None else by_sku.get(sku)
        if row is None:
            missing.append(entry)
        else:
            items.setdefault(row[0], row)
    meta = {**page_meta(query.page, query.page_size, len(items)), "missing": missing}
    body = serialize_page(list(items.values()), res.images, res.settings.PUBLIC_BASE_URL, meta)
    return Made(body, shared=bool(items))


async def product_detail(res: Resources, query: ProductId, live: LiveCatalog | None = None) -> Made:
    """JSON bytes of one product with all consumer-visible prices; a 404 marker if absent or inactive.
    With the index (`live`): from its detail store when the product's row is unchanged, else one query,
    then kept there."""
    product_id = query.id
    store, tag = None, 0
    if live is not None:
        store = live.details  # the store of this state (see page_items)
        has_image = res.images.has(product_id)
        tag = live.row_tags((product_id,), (has_image,))[0]
        body = store.get(product_id, tag)
        if body is not None:
            return Made(body)
    async with res.pool.acquire() as conn:
        row = await repo.get_product(conn, product_id)
    if row is None:
        return Made(b"", status=404)
    if store is None:
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
    body = orjson.dumps(doc)
    if store is not None:
        store.put(product_id, tag, body)
    return Made(body)


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
    return IndexedCategories([(*row, count) for row, count in page], total, f"{total}|{digest(counts)}")


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
