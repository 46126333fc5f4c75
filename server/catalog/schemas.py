"""Catalog inputs (declared once: validated by server.params and documented in OpenAPI) and output shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from server.catalog.query import MAX_IDS
from server.catalog.repo import SORTS
from server.catalog.search import Q_PATTERN
from server.params import PAGE, PAGE_SIZE, Param

FACETS = ("category", "price", "in_stock")
MAX_ID_ENTRY_CHARS = 100
# The whole raw value: 200 entries of ~14 characters. Below MAX_QUERY_BYTES (4096), so a longer value is a
# 422 naming query.ids rather than a 414 for the whole query string.
MAX_IDS_CHARS = 3000

PRODUCT_LIST_PARAMS: tuple[Param, ...] = (
    PAGE,
    PAGE_SIZE,
    Param(
        "category_id",
        "int",
        minimum=1,
        maximum=2_147_483_647,
        description="only this category and its sub-categories",
    ),
    Param(
        "q",
        "str",
        max_length=100,
        pattern=Q_PATTERN,
        description=(
            "Case-insensitive substring of the name, Arabic name or SKU. Arabic-aware: tashkeel and tatweel "
            "are ignored, أ إ آ ٱ match ا, ة matches ه, ى matches ي, and Arabic-Indic digits (٠–٩, ۰–۹) "
            "match 0–9. Needs at least 3 letters or digits in a row (Latin, Greek, Cyrillic or Arabic); "
            "shorter terms are rejected with 422 naming query.q. Empty means no filter."
        ),
    ),
    Param("min_price", "decimal", minimum=Decimal(0), description="minimum consumer price, e.g. 10.50"),
    Param("max_price", "decimal", minimum=Decimal(0), description="maximum consumer price"),
    Param("in_stock", "bool", description="true: only products in stock; false: only out of stock"),
    Param("sort", "enum", default="name", choices=tuple(SORTS), description="sort order"),
    Param(
        "facets",
        "list",
        choices=FACETS,
        max_items=len(FACETS),
        description=(
            "Comma-separated facets to count for the current filter: `category` (the sub-categories of "
            "category_id, or the top-level categories), `price` (the FACET_PRICE_BUCKETS buckets), "
            "`in_stock`; a repeated name counts once. Each counts under every filter except its own "
            "(see ProductFacets)."
        ),
    ),
    Param(
        "ids",
        "list",
        max_length=MAX_IDS_CHARS,
        max_items=MAX_IDS,
        item_max_length=MAX_ID_ENTRY_CHARS,
        description=(
            f"Batch look-up for carts and wishlists: up to {MAX_IDS} comma-separated product ids or SKUs "
            f"({MAX_ID_ENTRY_CHARS} characters each, {MAX_IDS_CHARS} in all; entries are trimmed, blank "
            "ones skipped, `ids=` is an empty batch). An entry of digits only (ASCII or Arabic-Indic) is a "
            "product id; anything else is a SKU, matched like `q` (case, Arabic-Indic digits, Arabic letter "
            "forms) but whole; `sku:` before an entry makes it a SKU (`sku:12345` for an all-digit SKU). "
            "A SKU shared by several active products answers the one with the lowest id. Items come in "
            "the order asked, each product once; entries with no active product are listed in `missing` "
            "in canonical form (ids as plain decimals, SKUs normalised). A look-up, not a listing: with "
            "`ids`, every other parameter (filters, sort, page, page_size, facets) is ignored."
        ),
    ),
)

PRODUCT_ID = Param("id", "int", location="path", minimum=1, maximum=2_147_483_647, description="product id")

CATEGORY_LIST_PARAMS: tuple[Param, ...] = (
    PAGE,
    PAGE_SIZE,
    Param(
        "parent_id",
        "int",
        minimum=1,
        maximum=2_147_483_647,
        description="only direct children of this category",
    ),
)

# Output shapes. Each named schema (its `title`) becomes one entry of the OpenAPI components, referenced
# wherever it is used (server.openapi hoists them), so generated clients get one type per shape.
_NULLABLE_STR = {"type": "string", "nullable": True}
_PRICE = {
    "type": "string",
    "nullable": True,
    "pattern": r"^[0-9]+\.[0-9]{2}$",
    "description": "exact decimal as a string",
}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """A named schema that may also be null: `nullable` beside a one-branch `anyOf` reference (OpenAPI 3.0
    has no `null` type; with a `type` here too, client generators drop the null)."""
    return {"nullable": True, "anyOf": [schema]}


CATEGORY_REF_SCHEMA: dict[str, Any] = {
    "title": "CategoryRef",
    "type": "object",
    "required": ["id", "name", "name_ar"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "name_ar": _NULLABLE_STR,
    },
}

PRODUCT_ITEM_SCHEMA: dict[str, Any] = {
    "title": "ProductItem",
    "type": "object",
    "required": ["id", "zoho_item_id", "name", "price", "stock", "in_stock", "has_image", "image_url"],
    "properties": {
        "id": {"type": "integer"},
        "zoho_item_id": {"type": "string"},
        "sku": _NULLABLE_STR,
        "name": {"type": "string"},
        "name_ar": _NULLABLE_STR,
        "category": nullable(CATEGORY_REF_SCHEMA),
        "price": _PRICE,
        "currency": _NULLABLE_STR,
        "stock": {"type": "integer"},
        "in_stock": {"type": "boolean"},
        "unit": _NULLABLE_STR,
        "has_image": {"type": "boolean"},
        "image_url": {"type": "string", "nullable": True, "format": "uri"},
    },
}

PRODUCT_PRICE_SCHEMA: dict[str, Any] = {
    "title": "ProductPrice",
    "type": "object",
    "required": ["price_list", "name", "currency", "price"],
    "properties": {
        "price_list": {"type": "string"},
        "name": {"type": "string"},
        "name_ar": _NULLABLE_STR,
        "currency": {"type": "string"},
        "price": {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$"},
    },
}

PRODUCT_DETAIL_SCHEMA: dict[str, Any] = {
    "title": "ProductDetail",
    "type": "object",
    "required": [*PRODUCT_ITEM_SCHEMA["required"], "description", "description_ar", "prices", "updated_at"],
    "properties": {
        **PRODUCT_ITEM_SCHEMA["properties"],
        "description": _NULLABLE_STR,
        "description_ar": _NULLABLE_STR,
        "updated_at": {"type": "string", "format": "date-time"},
        "prices": {"type": "array", "items": PRODUCT_PRICE_SCHEMA},
    },
}

CATEGORY_ITEM_SCHEMA: dict[str, Any] = {
    "title": "Category",
    "type": "object",
    "required": ["id", "zoho_category_id", "name", "parent_id", "product_count"],
    "properties": {
        "id": {"type": "integer"},
        "zoho_category_id": {"type": "string"},
        "name": {"type": "string"},
        "name_ar": _NULLABLE_STR,
        "parent_id": {"type": "integer", "nullable": True},
        "sort_order": {"type": "integer"},
        "product_count": {"type": "integer", "description": "active products here and in sub-categories"},
    },
}


CATEGORY_FACET_SCHEMA: dict[str, Any] = {
    "title": "CategoryFacet",
    "type": "object",
    "required": ["id", "name", "name_ar", "count"],
    "properties": {
        **CATEGORY_REF_SCHEMA["properties"],
        "count": {
            "type": "integer",
            "minimum": 0,
            "description": "the total `category_id=<id>` would give with the other filters kept",
        },
    },
}

PRICE_BUCKET_SCHEMA: dict[str, Any] = {
    "title": "PriceBucket",
    "type": "object",
    "required": ["min", "max", "count"],
    "properties": {
        "min": {**_PRICE, "nullable": False, "description": "lowest price in the bucket (inclusive)"},
        "max": {**_PRICE, "description": "upper bound (exclusive); null for the last bucket"},
        "count": {"type": "integer", "minimum": 0},
    },
}

PRICE_FACET_SCHEMA: dict[str, Any] = {
    "title": "PriceFacet",
    "type": "object",
    "required": ["buckets", "unpriced"],
    "properties": {
        "buckets": {"type": "array", "items": PRICE_BUCKET_SCHEMA},
        "unpriced": {
            "type": "integer",
            "minimum": 0,
            "description": "products without a consumer price (no min_price/max_price ever matches them)",
        },
    },
}

STOCK_FACET_SCHEMA: dict[str, Any] = {
    "title": "StockFacet",
    "type": "object",
    "required": ["value", "count"],
    "properties": {
        "value": {"type": "boolean", "description": "the `in_stock` filter value this entry counts"},
        "count": {"type": "integer", "minimum": 0},
    },
}

FACETS_SCHEMA: dict[str, Any] = {
    "title": "ProductFacets",
    "type": "object",
    "description": (
        "With `facets=` only: counts for the current filter (category_id, q, min_price, max_price, "
        "in_stock), only the facets asked for. Each facet ignores its own filter, so an entry's count is "
        "the total its choice would give with the other filters kept."
    ),
    "properties": {
        "category": {
            "type": "array",
            "items": CATEGORY_FACET_SCHEMA,
            "description": (
                "The active sub-categories of category_id (without it: the active top-level categories), "
                "in the categories' order; each counts itself and its descendants, zero counts included"
            ),
        },
        "price": PRICE_FACET_SCHEMA,
        "in_stock": {
            "type": "array",
            "items": STOCK_FACET_SCHEMA,
            "description": "`true` (stock > 0) then `false`",
        },
    },
}


def page_schema(item: dict[str, Any]) -> dict[str, Any]:
    """The envelope of every list endpoint, named after its item (ProductItem -> ProductPage)."""
    return {
        "title": str(item["title"]).removesuffix("Item") + "Page",
        "type": "object",
        "required": ["items", "page", "page_size", "total", "pages"],
        "properties": {
            "items": {"type": "array", "items": item},
            "page": {"type": "integer", "minimum": 1},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 200},
            "total": {"type": "integer", "minimum": 0},
            "pages": {"type": "integer", "minimum": 0},
        },
    }


def page_meta(page: int, page_size: int, total: int) -> dict[str, int]:
    """The page fields that follow `items`."""
    return {"page": page, "page_size": page_size, "total": total, "pages": -(-total // page_size)}


PRODUCT_PAGE_SCHEMA: dict[str, Any] = page_schema(PRODUCT_ITEM_SCHEMA)
PRODUCT_PAGE_SCHEMA["properties"] |= {
    "facets": FACETS_SCHEMA,
    "missing": {
        "type": "array",
        "items": {"type": "string"},
        "description": (
            "with `ids=` only: the entries (canonical form) that match no active product; the page is "
            "then page 1, page_size 200 (the most a batch holds), total the items found"
        ),
    },
}
