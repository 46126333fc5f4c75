"""`facets=` and `ids=` on the product list, against the real server with the index on and off: facet counts
checked against an independent count of the test database, the batch's order, duplicates, missing entries,
SKU look-up and 422s naming the field, and the OpenAPI document of both."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, run

PRODUCTS = "/api/consumer/products"
BOUNDS = [Decimal("10"), Decimal("25"), Decimal("50")]


@pytest.fixture(scope="module", params=["true", "false"], ids=["index", "sql"])
def server(
    request: pytest.FixtureRequest,
    database: Database,
    services: Services,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """The module's server, once with the in-memory index and once with SQL only."""
    awkward(database)
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("srv"),
        CATALOG_INDEX=request.param,
        # Its own page cache in Redis: the other server's answers must not be served for this one's.
        REDIS_KEY_PREFIX=f"t{request.param}{database.name[-8:]}:",
        FACET_PRICE_BUCKETS=",".join(map(str, BOUNDS)),
    ).start()
    yield proc
    proc.stop()


def awkward(db: Database) -> None:
    """Unpriced, inactive and out-of-stock products, an inactive and a nested category, awkward SKUs."""
    for sql in (
        "UPDATE products SET is_active = false WHERE id % 13 = 0",
        "UPDATE products SET stock_on_hand = 0 WHERE id % 4 = 0",
        "DELETE FROM product_prices WHERE product_id % 11 = 0"
        " AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')",
        "UPDATE products SET sku = '٧٧٧-عربي' WHERE id = 3",
        "UPDATE products SET sku = '12345' WHERE id = 5",
        "UPDATE products SET sku = 'DUP-1' WHERE id IN (7, 9)",
        "UPDATE products SET sku = 'GONE-1' WHERE id = 26",  # 26 % 13 == 0: inactive
        "UPDATE categories SET is_active = false"
        " WHERE id = (SELECT max(id) FROM categories WHERE parent_id IS NOT NULL)",
    ):
        run(db.execute(sql))


def queries(resp: httpx.Response) -> int:
    """Queries this request ran (Server-Timing, enabled by the suite)."""
    found = re.search(r'desc="(\d+) queries"', resp.headers["server-timing"])
    assert found, resp.headers
    return int(found.group(1))


def get(api: httpx.Client, **params: Any) -> dict[str, Any]:
    resp = api.get(PRODUCTS, params=params)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def errors(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 422, resp.text
    return {e["field"] for e in resp.json()["errors"]}


# -- an independent count of the facets, from the raw tables ----------------------------------------------
def expected_facets(db: Database, params: dict[str, Any]) -> dict[str, Any]:
    """The facets computed in Python from a dump of the tables (q matched with LIKE on search_text)."""
    cats = run(db.fetch("SELECT id, parent_id, is_active, sort_order, name FROM categories"))
    pattern = "%" + params.get("q", "").lower() + "%"
    products = run(
        db.fetch(
            "SELECT p.id, p.category_id, p.stock_on_hand, pp.price FROM products p"
            " LEFT JOIN product_prices pp ON pp.product_id = p.id"
            " AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')"
            " WHERE p.is_active AND p.search_text LIKE $1",
            pattern,
        )
    )
    children: dict[int | None, list[int]] = {}
    for c in cats:
        children.setdefault(c["parent_id"], []).append(c["id"])

    def subtree(cid: int) -> set[int]:
        seen, todo = {cid}, [cid]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen

    category = params.get("category_id")
    lo = None if "min_price" not in params else Decimal(params["min_price"])
    hi = None if "max_price" not in params else Decimal(params["max_price"])
    stock = None if "in_stock" not in params else params["in_stock"] == "true"
    within = None if category is None else subtree(category)
    base = [p for p in products if within is None or p["category_id"] in within]

    def price_ok(p: Any) -> bool:
        if lo is None and hi is None:
            return True
        return (
            p["price"] is not None and (lo is None or p["price"] >= lo) and (hi is None or p["price"] <= hi)
        )

    def stock_ok(p: Any) -> bool:
        return stock is None or (p["stock_on_hand"] > 0) == stock

    heads = sorted(
        (c for c in cats if c["is_active"] and c["parent_id"] == category),
        key=lambda c: (c["sort_order"], c["name"], c["id"]),
    )
    by_id = {c["id"]: c for c in run(db.fetch("SELECT id, name, name_ar FROM categories"))}
    category_facet = []
    for head in heads:
        members = subtree(head["id"])
        n = sum(1 for p in base if p["category_id"] in members and price_ok(p) and stock_ok(p))
        row = by_id[head["id"]]
        category_facet.append({"id": row["id"], "name": row["name"], "name_ar": row["name_ar"], "count": n})
    edges = [Decimal(0), *BOUNDS, None]
    buckets = []
    for low, high in itertools.pairwise(edges):
        n = sum(
            1
            for p in base
            if stock_ok(p)
            and p["price"] is not None
            and low <= p["price"]
            and (high is None or p["price"] < high)
        )
        buckets.append({"min": f"{low:.2f}", "max": None if high is None else f"{high:.2f}", "count": n})
    unpriced = sum(1 for p in base if stock_ok(p) and p["price"] is None)
    stocked = sum(1 for p in base if price_ok(p) and p["stock_on_hand"] > 0)
    unstocked = sum(1 for p in base if price_ok(p) and p["stock_on_hand"] <= 0)
    return {
        "category": category_facet,
        "price": {"buckets": buckets, "unpriced": unpriced},
        "in_stock": [{"value": True, "count": stocked}, {"value": False, "count": unstocked}],
    }


def roots_with_children(db: Database) -> list[int]:
    rows = run(db.fetch("SELECT DISTINCT parent_id FROM categories WHERE parent_id IS NOT NULL ORDER BY 1"))
    return [r[0] for r in rows]


FILTERS: list[dict[str, Any]] = [
    {},
    {"in_stock": "true"},
    {"in_stock": "false", "min_price": "10"},
    {"min_price": "12.34", "max_price": "60"},
    {"max_price": "25"},
    {"q": "sku-000"},
    {"q": "sku-000", "in_stock": "true", "max_price": "40"},
]


def test_facets_match_an_independent_count(api: httpx.Client, database: Database) -> None:
    parents = roots_with_children(database)
    assert parents
    cases = [*FILTERS, *({"category_id": c, **f} for c in parents[:2] for f in FILTERS[:4])]
    non_zero = 0
    for params in cases:
        doc = get(api, facets="category,price,in_stock", page_size=1, **params)
        assert list(doc) == ["items", "page", "page_size", "total", "pages", "facets"]
        expected = expected_facets(database, params)
        assert doc["facets"] == expected, params
        non_zero += sum(e["count"] > 0 for e in expected["category"])
        # Each facet ignores only its own filter: with none of price and stock set, every facet adds up to
        # the total (unpriced in `unpriced`; products without a category are in no category entry).
        if not {"min_price", "max_price", "in_stock"} & set(params):
            prices = doc["facets"]["price"]
            assert sum(b["count"] for b in prices["buckets"]) + prices["unpriced"] == doc["total"]
            assert sum(e["count"] for e in doc["facets"]["in_stock"]) == doc["total"]
    assert non_zero > 10


def test_a_facet_entry_counts_what_choosing_it_lists(api: httpx.Client) -> None:
    base = {"in_stock": "true", "max_price": "60"}
    doc = get(api, facets="category,price", **base)
    for entry in doc["facets"]["category"]:
        assert get(api, category_id=entry["id"], page_size=1, **base)["total"] == entry["count"]
    for bucket in doc["facets"]["price"]["buckets"]:  # the price facet ignores max_price=60
        chosen = {"in_stock": "true", "min_price": bucket["min"], "page_size": 1}
        if bucket["max"] is not None:  # `max` is exclusive, max_price inclusive
            chosen["max_price"] = str(Decimal(bucket["max"]) - Decimal("0.01"))
        assert get(api, **chosen)["total"] == bucket["count"]
    stock = get(api, facets="in_stock", max_price="60")["facets"]["in_stock"]
    for entry in stock:
        assert get(api, in_stock=str(entry["value"]).lower(), max_price="60")["total"] == entry["count"]


def test_only_the_facets_asked_for_in_a_fixed_order(api: httpx.Client) -> None:
    assert list(get(api, facets="in_stock")["facets"]) == ["in_stock"]
    both = api.get(PRODUCTS, params={"facets": "in_stock,category"})
    assert list(both.json()["facets"]) == ["category", "in_stock"]
    # Normalised: order and repeats do not make another answer (one cache entry, the same bytes).
    assert api.get(PRODUCTS, params={"facets": "category,in_stock,category"}).content == both.content
    assert "facets" not in get(api)
    price = get(api, facets="price")["facets"]["price"]["buckets"]
    assert [(b["min"], b["max"]) for b in price] == [
        ("0.00", "10.00"),
        ("10.00", "25.00"),
        ("25.00", "50.00"),
        ("50.00", None),
    ]
    # Leaf categories have no sub-categories to count; an unknown one neither.
    assert get(api, facets="category", category_id=10**6)["facets"] == {"category": []}


def test_facets_cost_a_constant_number_of_queries(api: httpx.Client) -> None:
    counts = set()
    for size in (1, 200):
        # A bound no price reaches, fresh cents: a key the page cache has not seen.
        resp = api.get(
            PRODUCTS,
            params={
                "page_size": size,
                "facets": "category,price,in_stock",
                "max_price": f"9999999.{size % 97:02d}",
            },
        )
        assert resp.status_code == 200
        counts.add(queries(resp))
    if "index" in api.get("/ready").json()["catalog"]:
        # The index counts the facets and names the categories from memory; the rows come from the row
        # store, or by primary key in one query for those it lacks.
        assert counts <= {0, 1}, counts
    else:
        # The list statement and the facet statement.
        assert counts == {2}, counts


@pytest.mark.parametrize(
    "value",
    ["colour", "", "category,,price", "category, price", "Price", "category,price,in_stock,category"],
)
def test_bad_facets_are_422(api: httpx.Client, value: str) -> None:
    assert errors(api.get(PRODUCTS, params={"facets": value})) == {"query.facets"}


# -- the batch ---------------------------------------------------------------------------------------------
def active_ids(db: Database, n: int) -> list[int]:
    rows = run(db.fetch("SELECT id FROM products WHERE is_active ORDER BY id DESC LIMIT $1", n))
    return [r[0] for r in rows]


def test_batch_keeps_order_answers_duplicates_once_and_lists_missing(
    api: httpx.Client, database: Database
) -> None:
    a, b, c = active_ids(database, 3)
    inactive = run(database.fetch("SELECT id FROM products WHERE NOT is_active ORDER BY id LIMIT 1"))[0][0]
    resp = api.get(PRODUCTS, params={"ids": f"{b},{a}, 0{c},{b},{inactive},999999,99999999999,{a}"})
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert [i["id"] for i in doc["items"]] == [b, a, c]
    assert doc["missing"] == [str(inactive), "999999", "99999999999"]
    # Page 1 of 1 (a batch holds up to 200): a ProductPage parser reads it.
    assert (doc["page"], doc["page_size"], doc["total"], doc["pages"]) == (1, 200, 3, 1)
    assert queries(resp) == 1
    listed = {i["id"]: i for i in get(api, page_size=200, sort="newest")["items"]}
    for item in doc["items"]:
        if item["id"] in listed:
            assert item == listed[item["id"]]  # the list's item shape and values


def test_batch_by_sku(api: httpx.Client, database: Database) -> None:
    sku_of_4 = run(database.fetch("SELECT sku FROM products WHERE id = 4"))[0][0]
    doc = get(
        api,
        ids=",".join(
            [
                sku_of_4.lower(),  # case-insensitive
                "٧٧٧-عربى",  # Arabic-Indic digits and alef maqsura as search normalises them
                "sku:12345",  # an all-digit SKU needs the prefix ...
                "12345",  # ... else it is an id
                "dup-1",  # shared: the lowest id answers
                "4",  # the same product as the first SKU: answered once
                "GONE-1",  # inactive
                "no-such-sku",
            ]
        ),
    )
    assert [i["id"] for i in doc["items"]] == [4, 3, 5, 7]
    assert doc["missing"] == ["12345", "gone-1", "no-such-sku"]
    assert doc["items"][1]["sku"] == "٧٧٧-عربي"


@pytest.mark.parametrize(
    "others",
    [
        {"page": "1", "page_size": "1", "sort": "-price"},  # what generated clients send anyway
        {"page": "3", "category_id": "1", "in_stock": "false", "max_price": "0.01", "facets": "price"},
        {"q": "no-such-product-zzz"},
    ],
)
def test_other_parameters_do_not_change_a_batch(api: httpx.Client, others: dict[str, str]) -> None:
    alone = api.get(PRODUCTS, params={"ids": "3,1,2, ,,2"})
    given = api.get(PRODUCTS, params={"ids": "3,1,2", **others})
    assert alone.status_code == given.status_code == 200
    assert alone.content == given.content and alone.headers["etag"] == given.headers["etag"]
    assert [i["id"] for i in alone.json()["items"]] == [3, 1, 2] and "facets" not in alone.json()


@pytest.mark.parametrize(
    ("value", "missing"),
    [
        ("2000000000,sku:000", ["2000000000", "sku:000"]),
        ("", []),
        (" , ", []),
        ("sku: ,x\x00y", ["sku:", "x\x00y"]),
    ],
)
def test_empty_batches_and_all_missing(api: httpx.Client, value: str, missing: list[str]) -> None:
    resp = api.get(PRODUCTS, params={"ids": value})
    doc = resp.json()
    assert resp.status_code == 200 and doc["items"] == [] and doc["missing"] == missing
    assert (doc["page"], doc["page_size"], doc["total"], doc["pages"]) == (1, 200, 0, 0)
    assert queries(resp) <= 1


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"ids": ",".join(["1"] * 201)}, {"query.ids"}),
        ({"ids": "1," + "x" * 101}, {"query.ids"}),
        ({"ids": "x" * 90 + "," + "y" * 2911}, {"query.ids"}),  # 3002 characters: a 422, not a 414
        ({"ids": "1", "ids2": "1"}, {"query.ids2"}),
        ({"ids": "1", "page_size": "0"}, {"query.page_size"}),  # ignored, but still validated
    ],
)
def test_bad_batches_are_422_naming_the_field(
    api: httpx.Client, params: dict[str, str], fields: set[str]
) -> None:
    assert errors(api.get(PRODUCTS, params=params)) == fields


def test_two_hundred_long_entries_are_accepted(api: httpx.Client, database: Database) -> None:
    ids = active_ids(database, 5)
    entries = [str(i) for i in ids] + [f"S{n:012d}" for n in range(195)]
    doc = get(api, ids=",".join(entries))
    assert [i["id"] for i in doc["items"]] == ids and len(doc["missing"]) == 195


def test_openapi_documents_facets_and_batch(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"][PRODUCTS]["get"]["parameters"]}
    facets, ids = params["facets"]["schema"], params["ids"]["schema"]
    assert facets["type"] == ids["type"] == "string"
    assert re.fullmatch(facets["pattern"], "category,price,in_stock")
    assert not re.fullmatch(facets["pattern"], "colour")
    assert ids["maxLength"] == 3000 and re.fullmatch(ids["pattern"], ",".join(["SKU-1"] * 200))
    assert not re.fullmatch(ids["pattern"], ",".join(["1"] * 201))
    assert "sku:" in params["ids"]["description"]
    schemas = spec["components"]["schemas"]
    page = schemas["ProductPage"]["properties"]
    assert page["facets"] == {"$ref": "#/components/schemas/ProductFacets"}
    assert page["missing"]["items"] == {"type": "string"}
    facet_props = schemas["ProductFacets"]["properties"]
    assert facet_props["category"]["items"] == {"$ref": "#/components/schemas/CategoryFacet"}
    assert facet_props["price"] == {"$ref": "#/components/schemas/PriceFacet"}
    assert facet_props["in_stock"]["items"] == {"$ref": "#/components/schemas/StockFacet"}
    assert schemas["PriceFacet"]["properties"]["buckets"]["items"] == {
        "$ref": "#/components/schemas/PriceBucket"
    }
