"""Admin inputs (path params, JSON and image bodies) and the shapes of the answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from server.body import INT_MAX, Field, JsonBody, RawBody
from server.images.ingest import MEDIA_TYPES
from server.params import Param

PRODUCT_ID = Param("id", "int", location="path", minimum=1, maximum=INT_MAX, description="products.id")
PRICE_LIST = Param(
    "price_list",
    "str",
    location="path",
    max_length=32,
    pattern=r"[a-z0-9_]{1,32}",
    description="price_lists.code",
)
MAX_PRICE = Decimal("999999999999.99")  # numeric(14, 2)

PRODUCT_PATCH = JsonBody(
    "AdminProductPatch",
    (
        Field("name", "str", min_length=1, max_length=300),
        Field("name_ar", "str", nullable=True, max_length=300, description='null or "" clears it'),
        Field("description", "str", nullable=True, max_length=20_000),
        Field("description_ar", "str", nullable=True, max_length=20_000),
        Field(
            "category_id",
            "int",
            nullable=True,
            minimum=1,
            maximum=INT_MAX,
            description="an existing category",
        ),
        Field("is_active", "bool", description="false hides the product from shoppers"),
    ),
    min_fields=1,
    description="The fields to change (at least one); fields not given keep their value.",
)
PRICE_PUT = JsonBody(
    "AdminPriceInput",
    (
        Field(
            "price",
            "decimal",
            required=True,
            minimum=Decimal(0),
            maximum=MAX_PRICE,
            description='>= 0, at most 2 decimals; a number or a string ("12.50") for exactness',
        ),
    ),
)
STOCK_PATCH = JsonBody(
    "AdminStockPatch",
    (
        Field("stock_on_hand", "int", minimum=0, maximum=INT_MAX, description="the new stock"),
        Field(
            "delta", "int", minimum=-INT_MAX, maximum=INT_MAX, description="added to the stock, atomically"
        ),
    ),
    min_fields=1,
    exclusive=("stock_on_hand", "delta"),
    description="Exactly one of `stock_on_hand` (set) or `delta` (add; the result must stay >= 0).",
)


def image_body(max_bytes: int) -> RawBody:
    """The image upload: raw JPEG, PNG or WebP bytes."""
    return RawBody(
        MEDIA_TYPES,
        max_bytes,
        description=(
            "The image file itself (not multipart). It is decoded fully and re-encoded as a JPEG without "
            "metadata; other types answer 415, undecodable data 422."
        ),
    )


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


AUDIT_ID: dict[str, Any] = {"type": "integer", "description": "the audit_log row of this write"}
ADMIN_PRODUCT_SCHEMA: dict[str, Any] = {
    "title": "AdminProduct",
    "type": "object",
    "required": ["id", "zoho_item_id", "name", "stock_on_hand", "is_active", "updated_at", "audit_id"],
    "properties": {
        "id": {"type": "integer"},
        "zoho_item_id": {"type": "string"},
        "sku": _nullable("string"),
        "name": {"type": "string"},
        "name_ar": _nullable("string"),
        "description": _nullable("string"),
        "description_ar": _nullable("string"),
        "category_id": _nullable("integer"),
        "stock_on_hand": {"type": "integer"},
        "is_active": {"type": "boolean"},
        "updated_at": {"type": "string", "format": "date-time"},
        "audit_id": AUDIT_ID,
    },
}
ADMIN_PRICE_SCHEMA: dict[str, Any] = {
    "title": "AdminPrice",
    "type": "object",
    "required": ["product_id", "price_list", "price", "currency", "audit_id"],
    "properties": {
        "product_id": {"type": "integer"},
        "price_list": {"type": "string"},
        "price": {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$"},
        "currency": {"type": "string"},
        "audit_id": AUDIT_ID,
    },
}
ADMIN_IMAGE_SCHEMA: dict[str, Any] = {
    "title": "AdminImage",
    "type": "object",
    "required": ["product_id", "zoho_item_id", "has_image", "image_path", "audit_id"],
    "properties": {
        "product_id": {"type": "integer"},
        "zoho_item_id": {"type": "string"},
        "has_image": {"type": "boolean", "description": "whether the file exists now"},
        "image_path": {"type": "string", "description": "/product-images/{zoho_item_id}.jpg"},
        "size_bytes": {"type": "integer", "description": "of the stored JPEG (uploads only)"},
        "removed": {"type": "boolean", "description": "a file was there and is gone (DELETE only)"},
        "audit_id": AUDIT_ID,
    },
}


def product_doc(row: Any) -> dict[str, Any]:
    """An admin product row as JSON-ready values (also what the audit log records)."""
    doc = dict(row)
    doc["updated_at"] = doc["updated_at"].isoformat()
    return doc
