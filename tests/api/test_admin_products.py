"""Admin product writes over HTTP: names/category/active, prices, stock; validation of every input (422 naming
each field, 400, 415, 413), audit rows, concurrency, and the change served by the public API within 1 s."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from admin_testlib import bearer, create_key
from catalog_testlib import Database, run

PUBLIC = "/api/consumer/products"
ADMIN = "/api/admin/products"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def key(database: Database) -> str:
    """A catalog:write key."""
    return create_key(database, "tests", "catalog:write")


@pytest.fixture(scope="module")
def key_id(database: Database, key: str) -> int:
    """The id of `key`."""
    rows = run(database.fetch("SELECT id FROM admin_keys WHERE prefix = $1", key.split("_")[1]))
    return int(rows[0]["id"])


def product_ids(db: Database, n: int, where: str = "is_active") -> list[int]:
    rows = run(db.fetch(f"SELECT id FROM products WHERE {where} ORDER BY id LIMIT {n}"))
    return [r["id"] for r in rows]


def fields(resp: httpx.Response, status: int = 422) -> set[str]:
    """The `field`s of a validation problem (asserting its status and format)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    body = resp.json()
    assert all(e["message"] and e["message_ar"] for e in body.get("errors", []))
    return {e["field"] for e in body.get("errors", [])}


def audit_rows(db: Database, target: str) -> list[Any]:
    return list(run(db.fetch("SELECT * FROM audit_log WHERE target = $1 ORDER BY id", target)))


def public_detail(api: httpx.Client, pid: int) -> dict[str, Any]:
    resp = api.get(f"{PUBLIC}/{pid}", headers={"Connection": "close"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def within_one_second(check: Any) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < 1.0, "not served within 1 s"
        time.sleep(0.01)
    return time.monotonic() - started


def test_patch_product_is_audited_and_served_within_a_second(
    api: httpx.Client, database: Database, key: str, key_id: int
) -> None:
    pid = product_ids(database, 1)[0]
    before = public_detail(api, pid)  # cached now, in at least one process
    api.get(PUBLIC, params={"q": "Lantern Deluxe"})
    categories = run(database.fetch("SELECT id FROM categories WHERE is_active ORDER BY id DESC LIMIT 1"))
    change = {
        "name": "  Lantern Deluxe 9000 ",
        "name_ar": "فانوس فاخر",
        "description": "Bright.",
        "category_id": categories[0]["id"],
    }
    resp = api.patch(f"{ADMIN}/{pid}", json=change, headers={**bearer(key), "X-Request-ID": "admin-patch-1"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store" and "etag" not in resp.headers
    doc = resp.json()
    assert doc["name"] == "Lantern Deluxe 9000" and doc["name_ar"] == "فانوس فاخر"
    assert doc["category_id"] == categories[0]["id"] and doc["id"] == pid

    def served() -> bool:
        detail = public_detail(api, pid)
        listed = api.get(PUBLIC, params={"q": "Lantern Deluxe"}, headers={"Connection": "close"}).json()
        return detail["name"] == "Lantern Deluxe 9000" and [i["id"] for i in listed["items"]] == [pid]

    within_one_second(served)
    assert public_detail(api, pid)["description"] == "Bright."

    (row,) = [r for r in audit_rows(database, f"product:{pid}") if r["request_id"] == "admin-patch-1"]
    assert row["key_id"] == key_id and row["action"] == "product.update"
    assert orjson.loads(row["before"])["name"] == before["name"]
    after = orjson.loads(row["after"])
    assert after == {
        "name": "Lantern Deluxe 9000",
        "name_ar": "فانوس فاخر",
        "description": "Bright.",
        "category_id": categories[0]["id"],
    }


def test_deactivating_hides_the_product(api: httpx.Client, database: Database, key: str) -> None:
    pid = product_ids(database, 1, "is_active AND id > 10")[0]
    public_detail(api, pid)
    assert api.patch(f"{ADMIN}/{pid}", json={"is_active": False}, headers=bearer(key)).status_code == 200
    within_one_second(lambda: api.get(f"{PUBLIC}/{pid}", headers={"Connection": "close"}).status_code == 404)
    assert api.patch(f"{ADMIN}/{pid}", json={"is_active": True}, headers=bearer(key)).status_code == 200
    within_one_second(lambda: api.get(f"{PUBLIC}/{pid}", headers={"Connection": "close"}).status_code == 200)


def test_patch_validation_names_every_field(api: httpx.Client, database: Database, key: str) -> None:
    pid = product_ids(database, 1)[0]
    url, auth = f"{ADMIN}/{pid}", bearer(key)
    bad = {"name": 5, "name_ar": "x" * 301, "is_active": "yes", "category_id": 0, "sku": "X", "bogus": 1}
    assert fields(api.patch(url, json=bad, headers=auth)) == {
        "body.name",
        "body.name_ar",
        "body.is_active",
        "body.category_id",
        "body.sku",
        "body.bogus",
    }
    assert fields(api.patch(url, json={"name": "   "}, headers=auth)) == {"body.name"}
    assert fields(api.patch(url, json={"name": None}, headers=auth)) == {"body.name"}
    assert fields(api.patch(url, json={}, headers=auth)) == {"body"}
    assert fields(api.patch(url, json=[1], headers=auth)) == {"body"}
    assert fields(api.patch(url, json={"category_id": 2_000_000}, headers=auth)) == {"body.category_id"}
    # Path and body errors in one answer.
    assert fields(api.patch(f"{ADMIN}/abc", json={"bogus": 1}, headers=auth)) == {"path.id", "body.bogus"}
    assert fields(api.patch(f"{ADMIN}/{pid}?x=1", json={"name": "A"}, headers=auth)) == {"query.x"}
    # Nothing was changed by any of them.
    assert (
        run(database.fetch("SELECT count(*) FROM audit_log WHERE target = $1", f"product:{pid}"))[0][0] <= 1
    )


def test_malformed_json_wrong_type_and_size(api: httpx.Client, database: Database, key: str) -> None:
    url = f"{ADMIN}/{product_ids(database, 1)[0]}"
    json_type = {**bearer(key), "Content-Type": "application/json"}
    for raw in (b"{", b"", b'{"name": NaN}', b'{"name": "a", "name": "b"}', b"\xff\xfe", b"[" * 100_000):
        resp = api.patch(url, content=raw, headers=json_type)
        assert resp.status_code == 400, (raw[:10], resp.text)
        assert resp.json()["code"] == "bad_request" and resp.headers["content-type"] == PROBLEM
    for content_type in (
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        headers = {**bearer(key), **({"Content-Type": content_type} if content_type else {})}
        resp = api.patch(url, content=b'{"name": "A"}', headers=headers)
        assert resp.status_code == 415, (content_type, resp.text)
        assert resp.json()["code"] == "unsupported_media_type"
    ok = api.patch(
        url,
        content=b'{"name": "A"}',
        headers={**json_type, "Content-Type": "application/json; charset=UTF-8"},
    )
    assert ok.status_code == 200, ok.text
    big = api.patch(url, content=b'{"description": "' + b"x" * 1_100_000 + b'"}', headers=json_type)
    assert big.status_code == 413 and big.json()["code"] == "payload_too_large"


def test_unknown_product_is_404(api: httpx.Client, key: str) -> None:
    for method, path, body in (
        ("PATCH", "/2000000000", {"name": "x"}),
        ("PUT", "/2000000000/prices/consumer", {"price": "1.00"}),
        ("PATCH", "/2000000000/stock", {"delta": 1}),
        ("DELETE", "/2000000000/image", None),
    ):
        resp = api.request(method, ADMIN + path, json=body, headers=bearer(key))
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["code"] == "not_found"


def test_put_price(api: httpx.Client, database: Database, key: str, key_id: int) -> None:
    pid = product_ids(database, 1, "is_active AND id > 20")[0]
    url = f"{ADMIN}/{pid}/prices/consumer"
    old = run(
        database.fetch(
            "SELECT price FROM product_prices pp JOIN price_lists pl ON pl.id = pp.price_list_id "
            "WHERE pl.code = 'consumer' AND pp.product_id = $1",
            pid,
        )
    )
    public_detail(api, pid)
    resp = api.put(url, json={"price": "1234.50"}, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "product_id": pid,
        "price_list": "consumer",
        "price": "1234.50",
        "currency": "SAR",
        "audit_id": resp.json()["audit_id"],
    }
    within_one_second(lambda: public_detail(api, pid)["price"] == "1234.50")
    row = audit_rows(database, f"product:{pid}")[-1]
    assert row["action"] == "product.price" and row["key_id"] == key_id
    assert orjson.loads(row["before"]) == {
        "price_list": "consumer",
        "price": str(old[0]["price"]) if old else None,
    }
    assert orjson.loads(row["after"]) == {"price_list": "consumer", "price": "1234.50"}
    # A JSON number is exact too (parsed as a decimal, never a float).
    assert api.put(url, json={"price": 0.1}, headers=bearer(key)).json()["price"] == "0.10"
    assert (
        api.put(
            url, content=b'{"price": 19.99}', headers={**bearer(key), "Content-Type": "application/json"}
        ).json()["price"]
        == "19.99"
    )
    stored = run(
        database.fetch(
            "SELECT price FROM product_prices WHERE product_id = $1 AND price_list_id = "
            "(SELECT id FROM price_lists WHERE code = 'consumer')",
            pid,
        )
    )
    assert stored[0]["price"] == Decimal("19.99")
    for bad in ("-1", -1, "1.234", 1.234, "abc", True, None, "1e3", 10**13):
        assert fields(api.put(url, json={"price": bad}, headers=bearer(key))) == {"body.price"}, bad
    assert fields(api.put(url, json={}, headers=bearer(key))) == {"body.price"}
    assert fields(api.put(url, json={"price": "1", "currency": "USD"}, headers=bearer(key))) == {
        "body.currency"
    }
    unknown = api.put(f"{ADMIN}/{pid}/prices/nosuchlist", json={"price": "1.00"}, headers=bearer(key))
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert fields(api.put(f"{ADMIN}/{pid}/prices/BAD-LIST", json={"price": "1"}, headers=bearer(key))) == {
        "path.price_list"
    }


def test_stock_set_delta_and_validation(api: httpx.Client, database: Database, key: str) -> None:
    pid = product_ids(database, 1, "is_active AND id > 30")[0]
    url = f"{ADMIN}/{pid}/stock"
    assert api.patch(url, json={"stock_on_hand": 10}, headers=bearer(key)).json()["stock_on_hand"] == 10
    assert api.patch(url, json={"delta": -3}, headers=bearer(key)).json()["stock_on_hand"] == 7
    within_one_second(lambda: public_detail(api, pid)["stock"] == 7)
    row = audit_rows(database, f"product:{pid}")[-1]
    assert row["action"] == "product.stock"
    assert orjson.loads(row["before"]) == {"stock_on_hand": 10}
    assert orjson.loads(row["after"]) == {"stock_on_hand": 7, "delta": -3}
    assert fields(api.patch(url, json={"delta": -8}, headers=bearer(key))) == {"body.delta"}
    assert fields(api.patch(url, json={"delta": 1, "stock_on_hand": 1}, headers=bearer(key))) == {"body"}
    assert fields(api.patch(url, json={"stock_on_hand": -1}, headers=bearer(key))) == {"body.stock_on_hand"}
    assert fields(api.patch(url, json={"stock_on_hand": 1.5}, headers=bearer(key))) == {"body.stock_on_hand"}
    assert fields(api.patch(url, json={"stock_on_hand": 2**31}, headers=bearer(key))) == {
        "body.stock_on_hand"
    }
    assert fields(api.patch(url, json={"delta": 2**31 - 1}, headers=bearer(key))) == {"body.delta"}
    assert fields(api.patch(url, json={}, headers=bearer(key))) == {"body"}
    assert run(database.fetch("SELECT stock_on_hand FROM products WHERE id = $1", pid))[0][0] == 7


def test_concurrent_deltas_all_count(api: httpx.Client, database: Database, key: str) -> None:
    pid = product_ids(database, 1, "is_active AND id > 40")[0]
    url = f"{ADMIN}/{pid}/stock"
    start = api.patch(url, json={"stock_on_hand": 100}, headers=bearer(key)).json()["stock_on_hand"]

    def bump(delta: int) -> int:
        with httpx.Client(base_url=str(api.base_url), timeout=10) as client:
            return client.patch(url, json={"delta": delta}, headers=bearer(key)).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(bump, [1, 2] * 12))
    assert statuses == [200] * 24
    assert run(database.fetch("SELECT stock_on_hand FROM products WHERE id = $1", pid))[0][0] == start + 36
    audits = audit_rows(database, f"product:{pid}")
    assert len([r for r in audits if orjson.loads(r["after"]).get("delta")]) == 24


def test_an_unchanged_write_bumps_no_version(api: httpx.Client, database: Database, key: str) -> None:
    pid = product_ids(database, 1, "is_active AND id > 50")[0]
    api.patch(f"{ADMIN}/{pid}/stock", json={"stock_on_hand": 5}, headers=bearer(key))
    version = run(database.fetch("SELECT version FROM catalog_state"))[0][0]
    assert api.patch(f"{ADMIN}/{pid}/stock", json={"delta": 0}, headers=bearer(key)).status_code == 200
    name = run(database.fetch("SELECT name FROM products WHERE id = $1", pid))[0][0]
    assert api.patch(f"{ADMIN}/{pid}", json={"name": name}, headers=bearer(key)).status_code == 200
    assert run(database.fetch("SELECT version FROM catalog_state"))[0][0] == version


def test_admin_paths_answer_options_and_405(api: httpx.Client, database: Database, key: str) -> None:
    pid = product_ids(database, 1)[0]
    options = api.options(f"{ADMIN}/{pid}/image")
    assert options.status_code == 204 and options.headers["allow"] == "DELETE, OPTIONS, PUT"
    for method in ("GET", "HEAD", "POST"):
        resp = api.request(method, f"{ADMIN}/{pid}/stock", headers=bearer(key))
        assert resp.status_code == 405 and resp.headers["allow"] == "OPTIONS, PATCH", method
