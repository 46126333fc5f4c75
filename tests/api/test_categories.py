"""Categories over HTTP: counts, pagination, parent filter, bounds."""

from __future__ import annotations

import httpx
import pytest
from catalog_testlib import Database, run

CATEGORIES = "/api/consumer/categories"


def test_every_active_category_with_subtree_counts(api: httpx.Client, database: Database) -> None:
    doc = api.get(CATEGORIES, params={"page_size": 200}).json()
    rows = run(database.fetch("SELECT id, parent_id FROM categories WHERE is_active"))
    assert doc["total"] == len(rows) == len(doc["items"])
    counts = {
        r["category_id"]: r["n"]
        for r in run(
            database.fetch(
                "SELECT category_id, count(*) AS n FROM products WHERE is_active GROUP BY category_id"
            )
        )
    }
    children: dict[int, list[int]] = {}
    for r in rows:
        if r["parent_id"] is not None:
            children.setdefault(r["parent_id"], []).append(r["id"])
    for item in doc["items"]:
        own = counts.get(item["id"], 0)
        below = sum(counts.get(c, 0) for c in children.get(item["id"], []))
        assert item["product_count"] == own + below
        assert item["name"] and item["name_ar"]
    order = [(i["sort_order"], i["name"], i["id"]) for i in doc["items"]]
    assert [o[0] for o in order] == sorted(o[0] for o in order)


def test_pagination_walks_everything_once(api: httpx.Client) -> None:
    seen: list[int] = []
    first = api.get(CATEGORIES, params={"page_size": 7}).json()
    for n in range(1, first["pages"] + 1):
        seen += [i["id"] for i in api.get(CATEGORIES, params={"page_size": 7, "page": n}).json()["items"]]
    assert len(seen) == len(set(seen)) == first["total"]
    assert api.get(CATEGORIES, params={"page": first["pages"] + 1}).json()["items"] == []
    assert api.get(CATEGORIES).json()["page_size"] == 50


def test_parent_filter(api: httpx.Client, database: Database) -> None:
    parent = run(database.fetch("SELECT id FROM categories WHERE parent_id IS NULL LIMIT 1"))[0]["id"]
    items = api.get(CATEGORIES, params={"parent_id": parent}).json()["items"]
    assert items and all(i["parent_id"] == parent for i in items)


@pytest.mark.parametrize("query", ["page_size=0", "page_size=201", "page=0", "parent_id=x", "nope=1"])
def test_bad_inputs(api: httpx.Client, query: str) -> None:
    resp = api.get(f"{CATEGORIES}?{query}")
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "query." + query.split("=")[0]
