"""Product list and detail over HTTP: filters, sorts, bounds, shapes, query counts."""

from __future__ import annotations

import random
import re
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from catalog_testlib import Database, run

PRODUCTS = "/api/consumer/products"


def page(api: httpx.Client, **params: Any) -> dict[str, Any]:
    """GET one products page; assert 200; return the JSON."""
    resp = api.get(PRODUCTS, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def all_items(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, walking the pages at the maximum page size."""
    items: list[dict[str, Any]] = []
    n = 1
    while True:
        doc = page(api, page=n, page_size=200, **params)
        items += doc["items"]
        if n >= doc["pages"]:
            return items
        n += 1


def test_default_page_shape(api: httpx.Client, database: Database) -> None:
    doc = page(api)
    active = run(database.fetch("SELECT count(*) FROM products WHERE is_active"))[0][0]
    assert doc["page"] == 1 and doc["page_size"] == 50
    assert doc["total"] == active and doc["pages"] == -(-active // 50)
    assert len(doc["items"]) == 50
    item = doc["items"][0]
    assert list(item) == [
        "id",
        "zoho_item_id",
        "sku",
        "name",
        "name_ar",
        "category",
        "price",
        "currency",
        "stock",
        "in_stock",
        "unit",
        "has_image",
        "image_url",
    ]
    assert re.fullmatch(r"[0-9]+\.[0-9]{2}", item["price"])
    assert item["in_stock"] == (item["stock"] > 0)


def test_items_match_the_database(api: httpx.Client, database: Database) -> None:
    rows = run(
        database.fetch(
            "SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar, p.stock_on_hand, p.unit, c.id AS cid, "
            "c.name AS cname, pp.price FROM products p LEFT JOIN categories c ON c.id = p.category_id "
            "LEFT JOIN product_prices pp ON pp.product_id = p.id "
            "AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer') WHERE p.is_active"
        )
    )
    by_id = {r["id"]: r for r in rows}
    items = all_items(api)
    assert len(items) == len(rows)
    for item in items:
        row = by_id[item["id"]]
        assert item["zoho_item_id"] == row["zoho_item_id"] and item["name"] == row["name"]
        assert item["name_ar"] == row["name_ar"] and item["stock"] == row["stock_on_hand"]
        assert Decimal(item["price"]) == row["price"]
        assert item["category"] == {
            "id": row["cid"],
            "name": row["cname"],
            "name_ar": item["category"]["name_ar"],
        }


def test_arabic_is_not_escaped(api: httpx.Client) -> None:
    raw = api.get(PRODUCTS, params={"page_size": 5}).content
    assert "\\u0" not in raw.decode() and any(0x0600 <= ord(ch) <= 0x06FF for ch in raw.decode())


def test_image_fields_follow_the_uploads_folder(api: httpx.Client, database: Database) -> None:
    items = all_items(api)
    for item in items:
        on_disk = (database.uploads / f"{item['zoho_item_id']}.jpg").is_symlink() or (
            database.uploads / f"{item['zoho_item_id']}.jpg"
        ).exists()
        assert item["has_image"] == on_disk
        if on_disk:
            assert item["image_url"].endswith(f"/product-images/{item['zoho_item_id']}.jpg")
        else:
            assert item["image_url"] is None
    assert 0.5 < sum(i["has_image"] for i in items) / len(items) < 0.9


@pytest.mark.parametrize("sort", ["name", "-name", "price", "-price", "newest"])
def test_sorts(api: httpx.Client, database: Database, sort: str) -> None:
    items = all_items(api, sort=sort)
    if sort in ("name", "-name"):
        keys = [(i["name"], i["id"]) for i in items]
        assert keys == sorted(keys, reverse=sort.startswith("-")) or _collated(keys, sort)
    elif sort in ("price", "-price"):
        prices = [Decimal(i["price"]) for i in items if i["price"] is not None]
        assert prices == sorted(prices, reverse=sort == "-price")
    else:
        created = {
            r["id"]: r["created_at"] for r in run(database.fetch("SELECT id, created_at FROM products"))
        }
        stamps = [created[i["id"]] for i in items]
        assert stamps == sorted(stamps, reverse=True)


def _collated(keys: list[tuple[str, int]], sort: str) -> bool:
    # The database may collate names differently from Python; the order must still be by name first.
    names = [k[0] for k in keys]
    return len(set(names)) < len(names) or names == sorted(names, key=str.casefold, reverse=sort == "-name")


def test_category_filter_includes_subcategories(api: httpx.Client, database: Database) -> None:
    top = run(database.fetch("SELECT id FROM categories WHERE parent_id IS NULL ORDER BY id LIMIT 1"))[0][
        "id"
    ]
    expected = run(
        database.fetch(
            "SELECT count(*) FROM products p JOIN categories c ON c.id = p.category_id "
            "WHERE p.is_active AND (c.id = $1 OR c.parent_id = $1)",
            top,
        )
    )[0][0]
    assert expected > 0
    items = all_items(api, category_id=top)
    assert len(items) == expected
    leaf = items[0]["category"]["id"]
    assert all(i["category"]["id"] == leaf for i in all_items(api, category_id=leaf))


def test_search_matches_name_and_sku_case_insensitively(api: httpx.Client) -> None:
    first = page(api, page_size=1)["items"][0]
    word = first["name"].split()[1]
    hits = all_items(api, q=word.upper())
    assert hits and all(
        word.lower() in (h["name"].lower() + (h["sku"] or "").lower() + (h["name_ar"] or "")) for h in hits
    )
    assert [h["id"] for h in all_items(api, q=first["sku"].lower())] == [first["id"]]
    assert page(api, q=f"%{word}")["total"] == 0  # LIKE wildcards are literal
    assert page(api, q=f"{word}_")["total"] == 0


def test_price_range_and_stock_filters(api: httpx.Client) -> None:
    items = all_items(api, min_price="100.00", max_price="2000.5")
    assert items and all(Decimal("100") <= Decimal(i["price"]) <= Decimal("2000.5") for i in items)
    in_stock = all_items(api, in_stock="true")
    out = all_items(api, in_stock="false")
    assert all(i["in_stock"] for i in in_stock) and not any(i["in_stock"] for i in out)
    assert len(in_stock) + len(out) == page(api)["total"]
    combined = all_items(api, in_stock="true", min_price="10", sort="-price")
    assert all(i["in_stock"] and Decimal(i["price"]) >= 10 for i in combined)


def test_page_beyond_the_end_is_empty_with_total(api: httpx.Client) -> None:
    doc = page(api, page=10_000, page_size=200)
    assert doc["items"] == [] and doc["total"] > 0 and doc["page"] == 10_000


def test_page_size_bounds(api: httpx.Client) -> None:
    assert len(page(api, page_size=1)["items"]) == 1
    assert len(page(api, page_size=200)["items"]) == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=0", "query.page_size"),
        ("page_size=201", "query.page_size"),
        ("page_size=abc", "query.page_size"),
        ("page_size=-5", "query.page_size"),
        ("page_size=99999999999999999999999", "query.page_size"),
        ("page_size=1.5", "query.page_size"),
        ("page_size=10&page_size=20", "query.page_size"),
        ("page=0", "query.page"),
        ("page=-1", "query.page"),
        ("page=x", "query.page"),
        ("unknown=1", "query.unknown"),
        ("category_id=abc", "query.category_id"),
        ("category_id=0", "query.category_id"),
        ("min_price=-1", "query.min_price"),
        ("min_price=1.234", "query.min_price"),
        ("max_price=abc", "query.max_price"),
        ("in_stock=maybe", "query.in_stock"),
        ("sort=random", "query.sort"),
        ("q=" + "x" * 101, "query.q"),
        ("q=%00", "query.q"),
        ("q=ab", "query.q"),
    ],
)
def test_bad_query_is_422_naming_the_field(api: httpx.Client, query: str, field: str) -> None:
    resp = api.get(f"{PRODUCTS}?{query}")
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "validation_failed" and body["status"] == 422
    assert body["title"] and body["title_ar"] and body["detail"] and body["detail_ar"]
    assert body["request_id"] == resp.headers["x-request-id"]
    fields = {e["field"] for e in body["errors"]}
    assert field in fields
    for err in body["errors"]:
        assert err["message"] and err["message_ar"] and err["message"] != err["message_ar"]


def test_all_bad_fields_are_reported_together(api: httpx.Client) -> None:
    body = api.get(f"{PRODUCTS}?page=0&page_size=0&sort=x").json()
    assert {e["field"] for e in body["errors"]} == {"query.page", "query.page_size", "query.sort"}


def test_detail(api: httpx.Client, database: Database) -> None:
    item = page(api, page_size=1)["items"][0]
    resp = api.get(f"{PRODUCTS}/{item['id']}")
    assert resp.status_code == 200
    doc = resp.json()
    for key in ("id", "zoho_item_id", "sku", "name", "name_ar", "category", "price", "stock", "has_image"):
        assert doc[key] == item[key]
    visible = run(
        database.fetch(
            "SELECT pl.code, pp.price FROM product_prices pp JOIN price_lists pl ON pl.id = pp.price_list_id "
            "WHERE pp.product_id = $1 AND pl.consumer_visible ORDER BY pl.sort_order",
            item["id"],
        )
    )
    assert [(p["price_list"], Decimal(p["price"])) for p in doc["prices"]] == [(r[0], r[1]) for r in visible]
    assert "wholesale" not in {p["price_list"] for p in doc["prices"]}
    assert doc["description"] and doc["description_ar"]


@pytest.mark.parametrize("path", ["999999", "2147483647"])
def test_unknown_product_is_404_problem(api: httpx.Client, path: str) -> None:
    resp = api.get(f"{PRODUCTS}/{path}")
    assert resp.status_code == 404
    body = resp.json()
    assert body["code"] == "not_found" and body["title_ar"] and body["detail_ar"]


@pytest.mark.parametrize("path", ["abc", "0", "-1", "1.5", "99999999999", "%20"])
def test_bad_product_id_is_422(api: httpx.Client, path: str) -> None:
    resp = api.get(f"{PRODUCTS}/{path}")
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "path.id"


def test_inactive_product_is_hidden(api: httpx.Client, database: Database) -> None:
    hidden = run(database.fetch("SELECT id FROM products WHERE NOT is_active LIMIT 1"))
    if not hidden:
        pytest.skip("seed made no inactive product")
    assert api.get(f"{PRODUCTS}/{hidden[0]['id']}").status_code == 404
    assert hidden[0]["id"] not in {i["id"] for i in all_items(api)}


def _query_count(resp: httpx.Response) -> int:
    match = re.search(r'desc="(\d+) queries"', resp.headers["server-timing"])
    assert match, resp.headers["server-timing"]
    return int(match.group(1))


def _indexed(api: httpx.Client) -> bool:
    """Whether the server answers from the in-memory catalog index (CATALOG_INDEX)."""
    return "index" in api.get("/ready").json()["catalog"]


@pytest.mark.parametrize(
    "extra",
    [{}, {"sort": "-price", "in_stock": "true"}, {"q": "sku", "min_price": "1"}, {"category_id": "1"}],
)
def test_query_count_is_constant(api: httpx.Client, extra: dict[str, str]) -> None:
    # A bound no price reaches, with fresh cents: same rows, but a key the page cache has not seen.
    uncached = {"max_price": f"99999999.{random.randrange(100):02d}"}
    small = api.get(PRODUCTS, params={"page_size": 1, **extra, **uncached})
    large = api.get(PRODUCTS, params={"page_size": 200, **extra, **uncached})
    assert small.status_code == large.status_code == 200
    assert len(large.json()["items"]) > 1
    if _indexed(api):
        # The index pages: a search costs one query for its hits (none once the answering process remembers
        # them), and the rows one query by primary key for those the row store lacks (none when it has them
        # all), whatever the page size.
        most = 2 if "q" in extra else 1
        assert _query_count(small) <= most
        assert _query_count(large) <= most
    else:
        assert _query_count(small) == _query_count(large) == 1


def test_detail_and_categories_query_count(api: httpx.Client, database: Database) -> None:
    ids = [
        r[0] for r in run(database.fetch("SELECT id FROM products WHERE is_active ORDER BY id DESC LIMIT 2"))
    ]
    assert [_query_count(api.get(f"{PRODUCTS}/{i}")) for i in ids] == [1, 1]  # not requested before
    # Categories with counts: one query, or none when the in-memory index answers.
    expected = 0 if _indexed(api) else 1
    assert _query_count(api.get("/api/consumer/categories", params={"page_size": 3})) == expected
    assert _query_count(api.get("/api/consumer/categories", params={"page_size": 199})) == expected


def test_count_is_reused_across_pages_and_refreshed_by_a_change(
    api: httpx.Client, database: Database
) -> None:
    first = page(api, page_size=7, sort="-name", in_stock="true")
    second = page(api, page=2, page_size=7, sort="-name", in_stock="true")  # known total: no count query
    assert second["total"] == first["total"] and len(second["items"]) == 7
    assert {i["id"] for i in first["items"]}.isdisjoint(i["id"] for i in second["items"])
    row = run(
        database.fetch("SELECT id FROM products WHERE is_active AND stock_on_hand > 0 ORDER BY id LIMIT 1")
    )
    run(database.execute("UPDATE products SET stock_on_hand = 0 WHERE id = $1", row[0]["id"]))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        third = page(api, page=3, page_size=7, sort="-name", in_stock="true")
        if third["total"] == first["total"] - 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the remembered total outlived the change")
