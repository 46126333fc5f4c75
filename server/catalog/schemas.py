"""Catalog inputs (declared once: validated by server.params and documented in OpenAPI) and output shapes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from server.catalog.repo import SORTS
from server.catalog.search import Q_PATTERN
from server.params import PAGE, PAGE_SIZE, Param

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
