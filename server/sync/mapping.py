"""Zoho Inventory records -> our rows, validated: a bad record is rejected with a reason, never written.

The field mapping (README, "Zoho sync"):

| Zoho item field | ours |
| --- | --- |
| `item_id` | `products.zoho_item_id` (`[A-Za-z0-9_-]{1,64}`) |
| `sku`, `name`, `description`, `unit` | same columns (`name` required) |
| custom field `ZOHO_FIELD_NAME_AR` / `ZOHO_FIELD_DESCRIPTION_AR` | `name_ar` / `description_ar` |
| `category_id` | `category_id` via `categories.zoho_category_id` |
| `available_stock` (else `stock_on_hand`) | `stock_on_hand` (whole units, rounded down) |
| `status` `active` / `inactive` | `is_active` |
| `rate` | price in the `CONSUMER_PRICE_LIST` list |
| `image_id` / `image_name` | the image `{zoho_item_id}.jpg` (fetched when either changes) |
| `last_modified_time` | the watermark of incremental runs |
| `created_time` | `created_at` of a new product |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

ZOHO_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CODE_CHARS = re.compile(r"[^a-z0-9]+")
_CENT = Decimal("0.01")
_MAX_PRICE = Decimal(10) ** 12
_INT32 = 2**31 - 1
# Longest text we accept per column (Zoho's own limits are lower; longer is garbage, not a product).
MAX_NAME = 500
MAX_SKU = 200
MAX_UNIT = 50
MAX_DESCRIPTION = 20_000
ZOHO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# What parse_time accepts (ZOHO_TIME_FORMAT's shape, the offset with or without a colon, or Z), checked before
# datetime.fromisoformat: 0.9 us a timestamp against strptime's 5.8 us (two an item: strptime was an eighth
# of a full run's own CPU in a profile).
_ZOHO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:[+-]\d{2}:?\d{2}|Z)")


class Invalid(ValueError):
    """A record that must not be written; the message names the field (never its value)."""


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Which Zoho custom fields (api names, e.g. `cf_name_ar`) hold the Arabic texts."""

    name_ar: str = "cf_name_ar"
    description_ar: str = "cf_description_ar"


@dataclass(frozen=True, slots=True)
class Item:
    """One valid Zoho item, in our columns."""

    zoho_item_id: str
    sku: str | None
    name: str
    name_ar: str | None
    description: str | None
    description_ar: str | None
    zoho_category_id: str | None
    unit: str | None
    stock_on_hand: int
    is_active: bool
    rate: Decimal | None
    image_key: str | None
    modified_at: datetime
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class Category:
    """One valid Zoho item category."""

    zoho_category_id: str
    name: str
    name_ar: str | None
    parent_zoho_id: str | None
    sort_order: int
    is_active: bool


@dataclass(frozen=True, slots=True)
class PriceBook:
    """One Zoho price book: a price list of ours (`code` derived from its name, stable once created)."""

    zoho_pricebook_id: str
    name: str
    currency: str
    per_item: bool  # false: a fixed-percentage book (no prices of its own)
    is_active: bool


def parse_time(value: Any) -> datetime:
    """Zoho's `2026-11-28T10:00:00+0000` (or `+00:00`) as an aware UTC datetime."""
    if not isinstance(value, str):
        raise Invalid("not a string")
    text = value.strip()
    try:
        if _ZOHO_TIME.fullmatch(text) is None:
            raise ValueError(text)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid("not a Zoho timestamp") from None
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Our datetime in Zoho's format (for the `last_modified_time` filter)."""
    return value.astimezone(UTC).strftime(ZOHO_TIME_FORMAT)


def _text(raw: dict[str, Any], field: str, limit: int, *, required: bool = False) -> str | None:
    value = raw.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise Invalid(f"{field}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"{field}: not text")
    text = str(value).strip()
    # PostgreSQL text cannot hold NUL; other control characters (but tab and newlines) are garbage too.
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise Invalid(f"{field}: control characters")
    if len(text) > limit:
        raise Invalid(f"{field}: longer than {limit}")
    return text


def _custom(raw: dict[str, Any], api_name: str, limit: int) -> str | None:
    """A custom field by api name: Zoho lists flatten them (`cf_x`) and details list `custom_fields`."""
    if api_name in raw:
        return _text(raw, api_name, limit)
    fields = raw.get("custom_fields")
    if isinstance(fields, list):
        for entry in fields:
            if isinstance(entry, dict) and entry.get("api_name") == api_name:
                return _text(entry, "value", limit)
    return None


def _number(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(f"{field}: not a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise Invalid(f"{field}: not a number") from None
    if not number.is_finite():
        raise Invalid(f"{field}: not finite")
    return number


def price(value: Any, field: str = "rate") -> Decimal:
    """A price: finite, >= 0, below 10^12, rounded half up to cents."""
    number = _number(value, field)
    if not 0 <= number < _MAX_PRICE:
        raise Invalid(f"{field}: out of range")
    return number.quantize(_CENT, rounding=ROUND_HALF_UP)


def _zoho_id(raw: dict[str, Any], field: str, *, required: bool) -> str | None:
    value = raw.get(field)
    if value is None or value in ("", "-1", -1):  # Zoho writes -1 / "" for "none"
        if required:
            raise Invalid(f"{field}: missing")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or not ZOHO_ID.match(str(value)):
        raise Invalid(f"{field}: not an id")
    return str(value)


def _status(raw: dict[str, Any]) -> bool:
    status = raw.get("status", "active")
    if status not in ("active", "inactive"):
        raise Invalid("status: neither active nor inactive")
    return bool(status == "active")


def map_item(raw: Any, fields: FieldMap) -> Item:
    """Validate one record of `GET /items`; raises Invalid naming the first bad field."""
    if not isinstance(raw, dict):
        raise Invalid("record: not an object")
    item_id = _zoho_id(raw, "item_id", required=True)
    assert item_id is not None
    stock_field = "available_stock" if raw.get("available_stock") not in (None, "") else "stock_on_hand"
    stock_raw = raw.get(stock_field)
    stock = (
        0
        if stock_raw in (None, "")
        else int(_number(stock_raw, stock_field).to_integral_value("ROUND_FLOOR"))
    )
    if not -_INT32 <= stock <= _INT32:
        raise Invalid(f"{stock_field}: out of range")
    rate = None if raw.get("rate") in (None, "") else price(raw["rate"])
    image_id = _text(raw, "image_id", 200) or _text(raw, "image_document_id", 200)
    image_name = _text(raw, "image_name", 300)
    created = raw.get("created_time")
    return Item(
        zoho_item_id=item_id,
        sku=_text(raw, "sku", MAX_SKU),
        name=_text(raw, "name", MAX_NAME, required=True) or "",
        name_ar=_custom(raw, fields.name_ar, MAX_NAME),
        description=_text(raw, "description", MAX_DESCRIPTION),
        description_ar=_custom(raw, fields.description_ar, MAX_DESCRIPTION),
        zoho_category_id=_zoho_id(raw, "category_id", required=False),
        unit=_text(raw, "unit", MAX_UNIT),
        stock_on_hand=stock,
        is_active=_status(raw),
        rate=rate,
        image_key=f"{image_id or ''}/{image_name or ''}" if image_id or image_name else None,
        modified_at=parse_time(raw.get("last_modified_time")),
        created_at=parse_time(created) if created else None,
    )


def map_category(raw: Any, position: int, fields: FieldMap) -> Category:
    """Validate one record of `GET /categories` (the Arabic name: the same custom field as items')."""
    if not isinstance(raw, dict):
        raise Invalid("record: not an object")
    category_id = _zoho_id(raw, "category_id", required=True)
    assert category_id is not None
    parent = _zoho_id(raw, "parent_category_id", required=False)
    active = raw["is_active"] if "is_active" in raw else _status(raw)
    if not isinstance(active, bool):
        raise Invalid("is_active: not a boolean")
    return Category(
        zoho_category_id=category_id,
        name=_text(raw, "name", MAX_NAME, required=True) or "",
        name_ar=_custom(raw, fields.name_ar, MAX_NAME),
        parent_zoho_id=None if parent == category_id else parent,
        sort_order=position,
        is_active=active,
    )


def map_pricebook(raw: Any) -> PriceBook:
    """Validate one record of `GET /pricebooks`."""
    if not isinstance(raw, dict):
        raise Invalid("record: not an object")
    book_id = _zoho_id(raw, "pricebook_id", required=True)
    assert book_id is not None
    currency = _text(raw, "currency_code", 3, required=True) or ""
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise Invalid("currency_code: not an ISO 4217 code")
    kind = raw.get("pricebook_type", "per_item")
    if kind not in ("per_item", "fixed_percentage"):
        raise Invalid("pricebook_type: unknown")
    return PriceBook(
        zoho_pricebook_id=book_id,
        name=_text(raw, "name", MAX_NAME, required=True) or "",
        currency=currency,
        per_item=kind == "per_item",
        is_active=raw.get("status", "active") == "active",
    )


def price_list_code(name: str, zoho_pricebook_id: str) -> str:
    """Our price-list code for a new price book: its name as `[a-z0-9_]`, else `zoho_<id>` (≤ 32)."""
    slug = _CODE_CHARS.sub("_", name.lower()).strip("_")[:32].strip("_")
    return slug or fallback_code(zoho_pricebook_id)


def fallback_code(zoho_pricebook_id: str) -> str:
    """`zoho_<id>` as a price-list code (when the name gives none, or one that is taken)."""
    return ("zoho_" + _CODE_CHARS.sub("_", zoho_pricebook_id.lower()))[:32]
