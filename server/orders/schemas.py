"""Order inputs (body, Idempotency-Key, cursor) and the shapes of the answers, declared once."""

from __future__ import annotations

import base64
import re
from typing import Any

from server.body import INT_MAX, Field, JsonBody
from server.errors import FieldError, IdempotencyKeyRequired, ValidationFailed
from server.params import Param

MAX_LINES = 100
MAX_QUANTITY = 999
HISTORY_PAGE_SIZE = 50
HISTORY_MAX_PAGE_SIZE = 200

# IETF httpapi-idempotency-key-header: the value is a Structured Field String ("..."). We also take the
# bare token most clients send; either way 1-255 visible ASCII characters without quotes or backslashes.
_KEY_CHARS = r"[\x21\x23-\x5b\x5d-\x7e]{1,255}"
KEY_RE = re.compile(f'"({_KEY_CHARS})"|({_KEY_CHARS})')
KEY_PATTERN = f'"{_KEY_CHARS}"|{_KEY_CHARS}'

PLACE = JsonBody(
    "OrderCreate",
    (
        Field(
            "lines",
            "objects",
            required=True,
            min_length=1,
            max_length=MAX_LINES,
            description="What to order; lines of one product are merged",
            items=(
                Field("product_id", "int", required=True, minimum=1, maximum=INT_MAX),
                Field("quantity", "int", required=True, minimum=1, maximum=MAX_QUANTITY),
            ),
        ),
        Field("notes", "str", nullable=True, max_length=1000, description="For the retailer"),
        Field("delivery_name", "str", nullable=True, max_length=200),
        Field("delivery_phone", "str", nullable=True, max_length=40),
        Field("delivery_address", "str", nullable=True, max_length=500),
        Field("delivery_city", "str", nullable=True, max_length=100),
    ),
    description="An order: 1-100 lines {product_id, quantity 1-999}, optional notes and delivery fields",
    max_bytes=64 * 1024,
)
EXTRA_FIELDS = ("notes", "delivery_name", "delivery_phone", "delivery_address", "delivery_city")

IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "str",
    location="header",
    required=True,
    max_length=257,
    pattern=f"(?:{KEY_PATTERN})",
    description=(
        'A unique value per order (e.g. a UUID), as a Structured Field String (`"<uuid>"`) or bare. The same '
        "key with the same body replays the first answer (`Idempotent-Replayed: true`), with another body is "
        "422, while the first is running is 409. Kept for ORDER_IDEMPOTENCY_TTL_S (24 h)."
    ),
)
ORDER_ID = Param("id", "int", location="path", minimum=1, maximum=2**63 - 1, description="order id")
CURSOR = Param(
    "cursor",
    "str",
    max_length=64,
    pattern=r"[A-Za-z0-9_-]{1,64}",
    description="`next_cursor` of the previous page (opaque)",
)
PAGE_SIZE = Param(
    "page_size",
    "int",
    default=HISTORY_PAGE_SIZE,
    minimum=1,
    maximum=HISTORY_MAX_PAGE_SIZE,
    description="orders per page",
)

_CURSOR_PREFIX = b"o1:"
_CURSOR_BODY = re.compile(rb"o1:[1-9][0-9]{0,18}")


def idempotency_key(raw: str | None) -> str:
    """The key of the header (400 when missing or malformed)."""
    if raw is None or not raw.strip():
        raise IdempotencyKeyRequired()
    found = KEY_RE.fullmatch(raw.strip())
    if found is None:
        raise IdempotencyKeyRequired(
            "The Idempotency-Key header must be 1-255 visible ASCII characters (a UUID is best), "
            'optionally quoted: Idempotency-Key: "<uuid>".',
            "يجب أن تكون ترويسة Idempotency-Key من 1 إلى 255 محرفاً مرئياً من ASCII (يُفضّل UUID)، "
            'ويجوز وضعها بين علامتي تنصيص: Idempotency-Key: "<uuid>".',
        )
    return found.group(1) or found.group(2)


def encode_cursor(order_id: int) -> str:
    """The opaque cursor of the page after the order `order_id`."""
    return base64.urlsafe_b64encode(_CURSOR_PREFIX + str(order_id).encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> int:
    """The id below which the page starts (422 for a cursor we did not make)."""
    if cursor is None:
        return 2**63 - 1
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        raw = b""
    if not _CURSOR_BODY.fullmatch(raw) or int(raw[3:]) > 2**63 - 1:
        raise ValidationFailed(
            errors=[
                FieldError("query.cursor", "is not a cursor of this list", "ليس مؤشراً صالحاً لهذه القائمة")
            ]
        )
    return int(raw[3:])


_MONEY: dict[str, Any] = {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$"}
_TEXT: dict[str, Any] = {"type": "string", "nullable": True}
LINE_SCHEMA: dict[str, Any] = {
    "title": "OrderLine",
    "type": "object",
    "required": ["product_id", "name", "quantity", "unit_price", "line_total"],
    "properties": {
        "product_id": {"type": "integer"},
        "sku": _TEXT,
        "name": {"type": "string"},
        "name_ar": _TEXT,
        "quantity": {"type": "integer", "minimum": 1},
        "unit_price": {**_MONEY, "description": "the consumer price when ordered"},
        "line_total": _MONEY,
    },
}
ORDER_SCHEMA: dict[str, Any] = {
    "title": "Order",
    "type": "object",
    "required": ["id", "number", "status", "currency", "total", "item_count", "lines", "created_at", "zoho"],
    "properties": {
        "id": {"type": "integer"},
        "number": {"type": "string", "description": "our order number; the Zoho sales order's reference"},
        "status": {"type": "string", "enum": ["pending", "confirmed", "cancelled"]},
        "currency": {"type": "string"},
        "total": _MONEY,
        "item_count": {"type": "integer"},
        "notes": _TEXT,
        "delivery": {
            "type": "object",
            "nullable": True,
            "properties": {k: _TEXT for k in ("name", "phone", "address", "city")},
        },
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "cancelled_at": {"type": "string", "format": "date-time", "nullable": True},
        "zoho": {
            "type": "object",
            "required": ["state"],
            "properties": {
                "state": {"type": "string", "enum": ["pending", "sent", "cancelled"]},
                "salesorder_id": _TEXT,
            },
        },
        "lines": {"type": "array", "items": LINE_SCHEMA},
    },
}
PLACED_SCHEMA: dict[str, Any] = {
    **ORDER_SCHEMA,
    "x-statuses": [201],
    "x-headers": ["Location", "Idempotent-Replayed"],
}
HISTORY_SCHEMA: dict[str, Any] = {
    "title": "OrderPage",
    "type": "object",
    "required": ["items", "page_size", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": ORDER_SCHEMA},
        "page_size": {"type": "integer"},
        "next_cursor": {"type": "string", "nullable": True, "description": "null on the last page"},
    },
}
