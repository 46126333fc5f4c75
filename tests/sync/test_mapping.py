"""Zoho records -> our rows (server/sync/mapping.py): the field mapping and what makes a record invalid."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from server.sync.mapping import (
    FieldMap,
    Invalid,
    format_time,
    map_category,
    map_item,
    map_pricebook,
    parse_time,
    price_list_code,
)

GOOD: dict[str, Any] = {
    "item_id": "4815000000000001",
    "name": " Steel Kettle ",
    "sku": "SKU-1",
    "description": "A kettle",
    "unit": "pcs",
    "rate": 12.345,
    "status": "active",
    "available_stock": 7.9,
    "stock_on_hand": 99,
    "category_id": "4815100000000001",
    "image_id": "77",
    "image_name": "k.jpg",
    "created_time": "2026-01-01T00:00:00+0000",
    "last_modified_time": "2026-11-28T10:00:00+0300",
    "custom_fields": [
        {"api_name": "cf_name_ar", "value": "غلاية"},
        {"api_name": "cf_description_ar", "value": "غلاية فولاذ"},
        {"api_name": "cf_other_ar", "value": "أخرى"},
    ],
}


def test_good_item() -> None:
    item = map_item(GOOD, FieldMap())
    assert item.zoho_item_id == "4815000000000001" and item.name == "Steel Kettle"
    assert (item.name_ar, item.description_ar) == ("غلاية", "غلاية فولاذ")
    assert item.stock_on_hand == 7  # available_stock first, whole units rounded down
    assert item.rate == Decimal("12.35") and item.is_active
    assert item.modified_at == datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    assert item.image_key == "77/k.jpg"
    # Configured custom fields, and the flattened `cf_*` keys of list answers.
    other = map_item({**GOOD, "cf_other_ar": "مسطح"}, FieldMap(name_ar="cf_other_ar"))
    assert other.name_ar == "مسطح"
    assert map_item({**GOOD, "available_stock": None}, FieldMap()).stock_on_hand == 99
    bare = map_item(
        {**GOOD, "image_id": "", "image_name": "", "category_id": "", "custom_fields": []}, FieldMap()
    )
    assert (bare.image_key, bare.zoho_category_id, bare.name_ar) == (None, None, None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"item_id": "bad id"}, "item_id"),
        ({"item_id": None}, "item_id"),
        ({"name": "  "}, "name"),
        ({"name": "x" * 501}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"name": ["list"]}, "name"),
        ({"status": "archived"}, "status"),
        ({"rate": "-1"}, "rate"),
        ({"rate": "NaN"}, "rate"),
        ({"rate": "1e13"}, "rate"),
        ({"rate": True}, "rate"),
        ({"available_stock": "lots"}, "available_stock"),
        ({"available_stock": 1e12}, "available_stock"),
        ({"last_modified_time": "2026-11-28"}, "last_modified_time"),
        ({"last_modified_time": None}, "last_modified_time"),
        ({"category_id": "../x"}, "category_id"),
        ({"cf_name_ar": 5.5}, "cf_name_ar"),
    ],
)
def test_invalid_items(change: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid, match=field if field != "last_modified_time" else "Zoho timestamp|string"):
        map_item({**GOOD, **change}, FieldMap())


def test_categories_and_price_books() -> None:
    cat = map_category(
        {
            "category_id": "5",
            "name": "Home",
            "parent_category_id": "-1",
            "status": "inactive",
            "custom_fields": [{"api_name": "cf_name_ar", "value": "المنزل"}],
        },
        3,
        FieldMap(),
    )
    assert (cat.parent_zoho_id, cat.is_active, cat.name_ar, cat.sort_order) == (None, False, "المنزل", 3)
    with pytest.raises(Invalid, match="name"):
        map_category({"category_id": "5"}, 0, FieldMap())
    book = map_pricebook({"pricebook_id": "9", "name": "Gold Members", "currency_code": "SAR"})
    assert book.per_item and book.is_active
    with pytest.raises(Invalid, match="currency_code"):
        map_pricebook({"pricebook_id": "9", "name": "X", "currency_code": "riyal"})
    assert price_list_code("Gold Members (VIP)", "9") == "gold_members_vip"
    assert price_list_code("عربي", "9-a") == "zoho_9_a"


def test_time_round_trip() -> None:
    when = parse_time("2026-11-28T10:00:00+0000")
    assert format_time(when) == "2026-11-28T10:00:00+0000"
    assert parse_time("2026-11-28T10:00:00+05:30") == datetime(2026, 11, 28, 4, 30, tzinfo=UTC)
    assert parse_time(" 2026-11-28T10:00:00-0130 ") == datetime(2026, 11, 28, 11, 30, tzinfo=UTC)
    assert parse_time("2026-11-28T10:00:00Z") == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28",  # a date alone
        "2026-11-28T10:00:00",  # no offset: the time is not known
        "2026-02-30T10:00:00+0000",  # no such day
        "2026-11-28T24:00:00+0000",
        "2026-11-28T10:00:00+2500",  # no such offset
        "2026-11-28 10:00:00+0000",
        "20261128T100000+0000",
        "2026-11-28T10:00:00.5+0000",
        "2026-11-28T10:00:00+0000junk",
        "",
        17,
    ],
)
def test_time_rejects_what_is_not_a_zoho_timestamp(value: object) -> None:
    with pytest.raises(Invalid):
        parse_time(value)
