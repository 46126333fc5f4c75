"""Pure-Python ``serialize_page``: builds the dicts and lets orjson write them (twin of ``_pages.pyx``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import orjson

from core_ext._columns import PRODUCT_COLUMNS, ImageLookup, RowLike
from core_ext.errors import SerializationError

__all__ = ["PRODUCT_COLUMNS", "join_items", "serialize_items", "serialize_page"]

_NCOLS: Final = len(PRODUCT_COLUMNS)
_ID: Final = PRODUCT_COLUMNS.index("id")
_ZOHO: Final = PRODUCT_COLUMNS.index("zoho_item_id")
_SKU: Final = PRODUCT_COLUMNS.index("sku")
_NAME: Final = PRODUCT_COLUMNS.index("name")
_NAME_AR: Final = PRODUCT_COLUMNS.index("name_ar")
_CAT_ID: Final = PRODUCT_COLUMNS.index("category_id")
_CAT_NAME: Final = PRODUCT_COLUMNS.index("category_name")
_CAT_NAME_AR: Final = PRODUCT_COLUMNS.index("category_name_ar")
_PRICE: Final = PRODUCT_COLUMNS.index("price")
_CURRENCY: Final = PRODUCT_COLUMNS.index("currency")
_STOCK: Final = PRODUCT_COLUMNS.index("stock")
_UNIT: Final = PRODUCT_COLUMNS.index("unit")
# orjson's own limits: it writes any int in [-2**63, 2**64) and refuses the rest.
_INT_MIN: Final = -(2**63)
_INT_END: Final = 2**64


def _fail(r: int, c: int, problem: str) -> SerializationError:
    return SerializationError(f"row {r} column {PRODUCT_COLUMNS[c]!r}: {problem}")


def _int(v: object, r: int, c: int) -> int:
    # bool is an int subclass, but a bool in an int column means the query is wrong.
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(r, c, f"expected int, got {type(v).__name__}")
    if not _INT_MIN <= v < _INT_END:
        raise _fail(r, c, "integer out of 64-bit range")
    return v


def _opt_int(v: object, r: int, c: int) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(r, c, f"expected int or None, got {type(v).__name__}")
    return _int(v, r, c)


def _str(v: object, r: int, c: int) -> str:
    if not isinstance(v, str):
        raise _fail(r, c, f"expected str, got {type(v).__name__}")
    # isascii() is O(1) on CPython; only non-ASCII text can hold a lone surrogate.
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _fail(r, c, "string is not valid UTF-8 (lone surrogate)") from None
    return v


def _opt_str(v: object, r: int, c: int) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise _fail(r, c, f"expected str or None, got {type(v).__name__}")
    return _str(v, r, c)


def _price(v: object, r: int) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return _str(v, r, _PRICE)  # already text (the query casts numeric to text): written as is
    if not isinstance(v, Decimal):
        raise _fail(r, _PRICE, f"expected Decimal, str or None, got {type(v).__name__}")
    return format(v, "f")


def _base_url(base_url: object) -> str:
    if not isinstance(base_url, str):
        raise SerializationError(f"base_url: expected str, got {type(base_url).__name__}")
    try:
        base_url.encode("utf-8")
    except UnicodeEncodeError:
        raise SerializationError("base_url: string is not valid UTF-8 (lone surrogate)") from None
    return base_url


def _rows(rows: Iterable[RowLike]) -> Sequence[RowLike]:
    seq = rows if isinstance(rows, list | tuple) else list(rows)
    for r, row in enumerate(seq):
        if len(row) < _NCOLS:  # extra trailing columns (e.g. a window total) are ignored
            raise SerializationError(f"row {r}: expected at least {_NCOLS} columns, got {len(row)}")
    return seq


def _flags(index: ImageLookup, ids: list[int]) -> Sequence[object]:
    flags = index.has_many(ids)
    if len(flags) != len(ids):
        raise ValueError(f"index.has_many returned {len(flags)} flags for {len(ids)} ids")
    return flags


def _items(rows: Iterable[RowLike], index: ImageLookup, base_url: str) -> list[dict[str, Any]]:
    seq = _rows(rows)
    prefix = _base_url(base_url) + "/product-images/"
    # Ids first, for every row, so both builds report the same error when several cells are wrong.
    ids = [_int(row[_ID], r, _ID) for r, row in enumerate(seq)]
    flags = _flags(index, ids)
    items = []
    for r, row in enumerate(seq):
        zoho = _str(row[_ZOHO], r, _ZOHO)
        sku = _opt_str(row[_SKU], r, _SKU)
        name = _str(row[_NAME], r, _NAME)
        name_ar = _opt_str(row[_NAME_AR], r, _NAME_AR)
        cat_id = _opt_int(row[_CAT_ID], r, _CAT_ID)
        cat_name = _opt_str(row[_CAT_NAME], r, _CAT_NAME)
        cat_name_ar = _opt_str(row[_CAT_NAME_AR], r, _CAT_NAME_AR)
        price = _price(row[_PRICE], r)
        currency = _opt_str(row[_CURRENCY], r, _CURRENCY)
        stock = _int(row[_STOCK], r, _STOCK)
        unit = _opt_str(row[_UNIT], r, _UNIT)
        has_image = bool(flags[r])
        items.append(
            {
                "id": ids[r],
                "zoho_item_id": zoho,
                "sku": sku,
                "name": name,
                "name_ar": name_ar,
                "category": None
                if cat_id is None
                else {"id": cat_id, "name": cat_name, "name_ar": cat_name_ar},
                "price": price,
                "currency": currency,
                "stock": stock,
                "in_stock": stock > 0,
                "unit": unit,
                "has_image": has_image,
                "image_url": f"{prefix}{zoho}.jpg" if has_image else None,
            }
        )
    return items


def serialize_page(
    rows: Iterable[RowLike], index: ImageLookup, base_url: str, meta: Mapping[str, Any]
) -> bytes:
    """The product-list response body: ``{"items": [...], **meta}`` as UTF-8 JSON bytes."""
    if "items" in meta:
        raise ValueError("meta must not contain 'items'")
    items = _items(rows, index, base_url)
    try:
        return orjson.dumps({"items": items, **meta})
    except orjson.JSONEncodeError as exc:
        # Every cell was checked above, so only meta can be refused here.
        raise SerializationError(f"meta: {exc}") from None


def serialize_items(rows: Iterable[RowLike], index: ImageLookup, base_url: str) -> list[bytes]:
    """Each row's item of the product list, as the bytes serialize_page writes for it."""
    return [orjson.dumps(item) for item in _items(rows, index, base_url)]


def join_items(items: Sequence[bytes], meta: Mapping[str, Any]) -> bytes:
    """The product-list body from items made by serialize_items: equal to serialize_page's bytes."""
    if "items" in meta:
        raise ValueError("meta must not contain 'items'")
    try:
        tail = orjson.dumps(dict(meta))
    except orjson.JSONEncodeError as exc:
        raise SerializationError(f"meta: {exc}") from None
    joined = b",".join(items)
    if len(tail) > 2:
        return b"".join((b'{"items":[', joined, b"],", tail[1:]))
    return b"".join((b'{"items":[', joined, b"]}"))
