"""`q` over HTTP is Arabic-aware: tashkeel, tatweel, hamza forms of alef, taa marbuta, alef maqsura and
Arabic-Indic digits change nothing in what a search finds, and a term the trigram index cannot serve is a
422 naming `query.q`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from catalog_testlib import Database, run

PRODUCTS = "/api/consumer/products"

# (zoho_item_id, sku, name, name_ar) as a shop would type them: with diacritics, hamza, Arabic digits.
ROWS = [
    ("ar-coffee", "AR-٠٠٧٧١", "Arabic Coffee Blend", "قَهْوَة عَرَبِيَّة مُمْتَازَة"),
    ("ar-dates", "AR-00772", "Ahmad Dates", "تمور أحمد الإِمارات"),
    ("ar-hospital", "AR-۰۰۷۷۳", "Clinic Sweets", "حلويات مستشفى النور"),
    ("ar-milk", "AR-00774", "Stretched Milk", "حـلـيـب مـمـدود"),
    ("ar-tab", "AR-00775", "Tabbed\tSeparated Tea", "شاي"),
]

# Every spelling in a group must find exactly the same products, and at least the one named.
GROUPS: list[tuple[str, list[str]]] = [
    ("ar-coffee", ["قهوه عربيه", "قَهْوَة عَرَبِيَّة", "قهوة عربية", "قـهـوة عـربـيـة", "قَهوَةُ عَرَبِيَّةٌ"]),
    ("ar-dates", ["تمور احمد", "تمور أحمد", "تمور إحمد", "تمور آحمد", "تمور ٱحمد", "الامارات", "الإمارات"]),
    ("ar-hospital", ["مستشفى", "مستشفي", "مُسْتَشْفَى"]),
    ("ar-milk", ["حليب ممدود", "حـلـيـب مـمـدود", "حَلِيبٌ مَمْدُود"]),
    ("ar-coffee", ["ar-00771", "AR-٠٠٧٧١", "ar-۰۰۷۷۱", "٠٠٧٧١", "00771"]),
    ("ar-hospital", ["ar-00773", "AR-۰۰۷۷۳", "٠٠٧٧٣"]),
]


@pytest.fixture(scope="module")
def arabic_products(database: Database) -> dict[str, int]:
    """The rows above, added to the module's catalog; {zoho_item_id: id}."""

    async def go() -> dict[str, int]:
        ids = {}
        for zoho, sku, name, name_ar in ROWS:
            rows = await database.fetch(
                "INSERT INTO products (zoho_item_id, sku, name, name_ar, stock_on_hand) "
                "VALUES ($1, $2, $3, $4, 5) RETURNING id",
                zoho,
                sku,
                name,
                name_ar,
            )
            ids[zoho] = rows[0][0]
        return ids

    made: dict[str, int] = run(go())
    return made


def ids(api: httpx.Client, q: str, **extra: Any) -> list[int]:
    """Ids of every product a search finds (all pages), asserting 200."""
    found: list[int] = []
    page = 1
    while True:
        resp = api.get(PRODUCTS, params={"q": q, "page": page, "page_size": 200, **extra})
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        found += [item["id"] for item in doc["items"]]
        if page >= doc["pages"]:
            return found
        page += 1


@pytest.mark.parametrize(("expected", "spellings"), GROUPS)
def test_every_spelling_finds_the_same_products(
    api: httpx.Client, arabic_products: dict[str, int], expected: str, spellings: list[str]
) -> None:
    answers = {q: ids(api, q) for q in spellings}
    first = answers[spellings[0]]
    assert arabic_products[expected] in first, answers
    for q, found in answers.items():
        assert found == first, f"{q!r} found {found}, {spellings[0]!r} found {first}"


def test_spellings_share_one_cached_page(api: httpx.Client, arabic_products: dict[str, int]) -> None:
    etags = {api.get(PRODUCTS, params={"q": q}).headers["etag"] for q in ("قهوة عربية", "قَهْوَة عَرَبِيَّة")}
    assert len(etags) == 1


def test_control_characters_are_spaces_and_fields_stay_apart(
    api: httpx.Client, arabic_products: dict[str, int]
) -> None:
    assert ids(api, "tabbed separated") == ids(api, "tabbed\tseparated") == [arabic_products["ar-tab"]]
    # The name ends "Blend" and the SKU starts "AR-": adjacent in search_text, but never one match.
    assert ids(api, "blend ar-") == [] and ids(api, "blend\x1far-") == []
    assert arabic_products["ar-coffee"] in ids(api, "blend")


@pytest.mark.parametrize("q", ["ab", "tv", "a b c", "%%", "__", "\u064e\u064f\u0650", "ـــ", "٠١", "x-1"])
def test_a_term_without_three_letters_or_digits_in_a_row_is_422(api: httpx.Client, q: str) -> None:
    resp = api.get(PRODUCTS, params={"q": q})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "validation_failed"
    [error] = body["errors"]
    assert error["field"] == "query.q" and error["message"] and error["message_ar"]
