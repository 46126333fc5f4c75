"""Orders over HTTP: placing (price snapshot, totals), exactly once (Idempotency-Key), refusals, history
(keyset pages), detail, cancel (restock), another user's orders (always 404), the orders rate limit.
Concurrency and freshness: test_orders_concurrency.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from admin_testlib import wait_for
from catalog_testlib import Database, ServerProcess, Services, run
from orders_testlib import (
    JWT_ENV,
    ORDERS,
    Shopper,
    make_shoppers,
    new_key,
    priced_products,
    stock_of,
)
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two processes, rate limits off (the functional default), a JWT key the tests sign with."""
    proc = ServerProcess(database, services, tmp_path_factory.mktemp("orders"), **JWT_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shoppers(database: Database) -> list[Shopper]:
    return run(make_shoppers(database, 3))


def place(
    api: httpx.Client, shopper: Shopper, lines: list[dict[str, int]], key: str | None = None, **extra: str
) -> httpx.Response:
    return api.post(ORDERS, json={"lines": lines, **extra}, headers=shopper.headers(key or new_key()))


def test_place_snapshots_consumer_prices_and_decrements_stock(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    a, b = run(priced_products(database, 2, stock=10))
    prices = {
        r["id"]: r["price"]
        for r in run(
            database.fetch(
                "SELECT pp.product_id AS id, pp.price FROM product_prices pp JOIN price_lists pl "
                "ON pl.id = pp.price_list_id AND pl.code = 'consumer' WHERE pp.product_id = ANY($1::int[])",
                [a, b],
            )
        )
    }
    # Lines of one product are merged; line order does not matter.
    resp = place(
        api,
        shoppers[0],
        [
            {"product_id": b, "quantity": 1},
            {"product_id": a, "quantity": 2},
            {"product_id": b, "quantity": 2},
        ],
        notes="ring twice",
        delivery_city="Riyadh",
    )
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert resp.headers["location"] == f"{ORDERS}/{doc['id']}"
    assert "idempotent-replayed" not in resp.headers
    assert doc["status"] == "pending" and doc["number"] == f"ORD-{doc['id']:08d}"
    assert [(line["product_id"], line["quantity"]) for line in doc["lines"]] == [(a, 2), (b, 3)]
    for line in doc["lines"]:
        assert Decimal(line["unit_price"]) == prices[line["product_id"]]
        assert Decimal(line["line_total"]) == prices[line["product_id"]] * line["quantity"]
    assert Decimal(doc["total"]) == prices[a] * 2 + prices[b] * 3
    assert doc["item_count"] == 5 and doc["notes"] == "ring twice"
    assert doc["delivery"] == {"name": None, "phone": None, "address": None, "city": "Riyadh"}
    assert doc["zoho"] == {"state": "pending", "salesorder_id": None}
    assert run(stock_of(database, [a, b])) == {a: 8, b: 7}
    # Detail and history show the same order; a later price change does not touch it.
    run(database.execute("UPDATE product_prices SET price = price + 1 WHERE product_id = $1", a))
    detail = api.get(resp.headers["location"], headers=shoppers[0].headers())
    assert detail.status_code == 200 and detail.json() == doc
    assert "private" in detail.headers["cache-control"] or detail.headers["cache-control"] == "no-store"
    history = api.get(ORDERS, headers=shoppers[0].headers()).json()
    assert history["items"][0] == doc


def test_idempotency_key_missing_malformed_replayed_reused(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    (pid,) = run(priced_products(database, 1, stock=10, skip=2))
    body = {"lines": [{"product_id": pid, "quantity": 1}]}
    auth = shoppers[0].headers()
    missing = api.post(ORDERS, json=body, headers=auth)
    assert missing.status_code == 400 and missing.json()["code"] == "idempotency_key_required"
    assert missing.headers["content-type"] == "application/problem+json"
    for bad in ("a b", "x" * 256, '"unterminated', 'a"b', "\\x"):
        resp = api.post(ORDERS, json=body, headers={**auth, "Idempotency-Key": bad})
        assert resp.status_code == 400, (bad, resp.text)
    key = new_key()
    first = api.post(ORDERS, json=body, headers={**auth, "Idempotency-Key": f'"{key}"'})  # sf-string form
    assert first.status_code == 201
    again = api.post(ORDERS, json=body, headers={**auth, "Idempotency-Key": key})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content and again.headers["location"] == first.headers["location"]
    other = api.post(
        ORDERS, json={"lines": [{"product_id": pid, "quantity": 2}]}, headers={**auth, "Idempotency-Key": key}
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    # Keys are per user: another shopper's identical key is a new order.
    theirs = api.post(ORDERS, json=body, headers={**shoppers[1].headers(), "Idempotency-Key": key})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert run(stock_of(database, [pid])) == {pid: 8}
    rows = run(database.fetch("SELECT count(*) AS n FROM idempotency_keys WHERE key = $1", key))
    assert rows[0]["n"] == 2


def test_key_in_flight_is_409(api: httpx.Client, database: Database, shoppers: list[Shopper]) -> None:
    (pid,) = run(priced_products(database, 1, stock=5, skip=3))
    key, user = new_key(), shoppers[0]

    async def hold_and_post() -> httpx.Response:
        conn = await asyncpg.connect(database.url)
        try:
            async with conn.transaction():  # what a running first request holds
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($2::text, $1::bigint))", user.id, key
                )
                return await asyncio.to_thread(place, api, user, [{"product_id": pid, "quantity": 1}], key)
        finally:
            await conn.close()

    busy = run(hold_and_post())
    assert busy.status_code == 409 and busy.json()["code"] == "idempotency_key_in_use"
    assert busy.headers["retry-after"] == "1"
    done = place(api, user, [{"product_id": pid, "quantity": 1}], key)
    assert done.status_code == 201 and "idempotent-replayed" not in done.headers


def test_short_stock_is_409_listing_lines_and_changes_nothing(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    a, b, c = run(priced_products(database, 3, stock=3, skip=4))
    run(database.execute("UPDATE products SET stock_on_hand = 0 WHERE id = $1", c))
    before = run(stock_of(database, [a, b, c]))
    key = new_key()
    lines = [
        {"product_id": c, "quantity": 1},
        {"product_id": a, "quantity": 2},
        {"product_id": b, "quantity": 4},
    ]
    resp = place(api, shoppers[0], lines, key)
    assert resp.status_code == 409 and resp.headers["content-type"] == "application/problem+json"
    doc = resp.json()
    assert doc["code"] == "insufficient_stock" and doc["title_ar"] and doc["detail_ar"]
    assert doc["lines"] == [
        {"line": 0, "product_id": c, "requested": 1, "available": 0},
        {"line": 2, "product_id": b, "requested": 4, "available": 3},
    ]
    assert [e["field"] for e in doc["errors"]] == ["body.lines[0].quantity", "body.lines[2].quantity"]
    assert run(stock_of(database, [a, b, c])) == before
    # A refusal leaves the key unused: the same key with a smaller order goes through.
    ok = place(api, shoppers[0], [{"product_id": a, "quantity": 2}], key)
    assert ok.status_code == 201


def test_unknown_inactive_and_invalid_lines_are_422(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    a, inactive = run(priced_products(database, 2, stock=5, skip=7))
    run(database.execute("UPDATE products SET is_active = false WHERE id = $1", inactive))
    resp = place(
        api,
        shoppers[0],
        [
            {"product_id": a, "quantity": 1},
            {"product_id": 2_000_000_000, "quantity": 1},
            {"product_id": inactive, "quantity": 1},
        ],
    )
    assert resp.status_code == 422, resp.text
    fields = [e["field"] for e in resp.json()["errors"]]
    assert fields == ["body.lines[1].product_id", "body.lines[2].product_id"]
    assert run(stock_of(database, [a])) == {a: 5}
    cases = [
        ({"lines": []}, "body.lines"),
        ({"lines": [{"product_id": a, "quantity": 1}] * 101}, "body.lines"),
        ({"lines": [{"product_id": a, "quantity": 0}]}, "body.lines[0].quantity"),
        ({"lines": [{"product_id": a, "quantity": 1000}]}, "body.lines[0].quantity"),
        ({"lines": [{"product_id": a}]}, "body.lines[0].quantity"),
        ({"lines": [{"product_id": a, "quantity": 1, "price": 1}]}, "body.lines[0].price"),
        ({"lines": [{"product_id": "1", "quantity": 1}]}, "body.lines[0].product_id"),
        ({"lines": ["x"]}, "body.lines[0]"),
        ({"lines": {"product_id": a}}, "body.lines"),
        ({"lines": [{"product_id": a, "quantity": 1}], "notes": "n" * 1001}, "body.notes"),
        ({}, "body.lines"),
    ]
    for body, field in cases:
        bad = api.post(ORDERS, json=body, headers=shoppers[0].headers(new_key()))
        assert bad.status_code == 422, (body, bad.text)
        assert bad.json()["errors"][0]["field"] == field, bad.json()
    assert (
        api.post(
            ORDERS,
            content=b"{",
            headers={**shoppers[0].headers(new_key()), "Content-Type": "application/json"},
        ).status_code
        == 400
    )
    assert (
        api.post(
            ORDERS, json={"lines": [{"product_id": a, "quantity": 1}]}, headers={"Idempotency-Key": new_key()}
        ).status_code
        == 401
    )


def test_history_keyset_pages_newest_first_and_cursor_checks(api: httpx.Client, database: Database) -> None:
    (user,) = run(make_shoppers(database, 1))
    (pid,) = run(priced_products(database, 1, stock=100, skip=22))
    made = [place(api, user, [{"product_id": pid, "quantity": 1}]).json()["id"] for _ in range(7)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"page_size": "3", **({"cursor": cursor} if cursor else {})}
        resp = api.get(ORDERS, params=params, headers=user.headers())
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["page_size"] == 3
        seen += [o["id"] for o in doc["items"]]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(made, reverse=True) and pages == 3
    assert all(len(o["lines"]) == 1 for o in api.get(ORDERS, headers=user.headers()).json()["items"])
    for bad in ("AAAA", "not-a-cursor", "b2I6MTIz", "x" * 65, "!!", "bzE6MA"):
        resp = api.get(ORDERS, params={"cursor": bad}, headers=user.headers())
        assert resp.status_code in (400, 422), (bad, resp.status_code)
        assert resp.headers["content-type"] == "application/problem+json"
    assert api.get(ORDERS, params={"page_size": "201"}, headers=user.headers()).status_code == 422
    assert api.get(ORDERS, params={"page_size": "0"}, headers=user.headers()).status_code == 422
    assert api.get(ORDERS).status_code == 401


def test_another_users_order_is_404_on_every_route(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    (pid,) = run(priced_products(database, 1, stock=5, skip=24))
    owner, other = shoppers[0], shoppers[1]
    order = place(api, owner, [{"product_id": pid, "quantity": 1}]).json()
    for method, path in (("GET", f"{ORDERS}/{order['id']}"), ("POST", f"{ORDERS}/{order['id']}/cancel")):
        theirs = api.request(method, path, headers=other.headers())
        missing = api.request(method, path.replace(str(order["id"]), "999999999"), headers=other.headers())
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["code"] == "not_found" and str(order["number"]) not in theirs.text
    assert order["id"] not in [o["id"] for o in api.get(ORDERS, headers=other.headers()).json()["items"]]
    assert run(stock_of(database, [pid])) == {pid: 4}  # the other user's cancel changed nothing
    assert api.get(f"{ORDERS}/{order['id']}", headers=owner.headers()).json()["status"] == "pending"


def test_cancel_pending_restocks_once(api: httpx.Client, database: Database, shoppers: list[Shopper]) -> None:
    a, b = run(priced_products(database, 2, stock=6, skip=26))
    order = place(
        api, shoppers[0], [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 6}]
    ).json()
    assert run(stock_of(database, [a, b])) == {a: 4, b: 0}
    resp = api.post(f"{ORDERS}/{order['id']}/cancel", headers=shoppers[0].headers())
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["status"] == "cancelled" and doc["cancelled_at"] and doc["zoho"]["state"] == "cancelled"
    assert run(stock_of(database, [a, b])) == {a: 6, b: 6}
    again = api.post(f"{ORDERS}/{order['id']}/cancel", headers=shoppers[0].headers())
    assert again.status_code == 409 and again.json()["code"] == "order_not_cancellable"
    assert run(stock_of(database, [a, b])) == {a: 6, b: 6}


def test_orders_rate_limit_policy_is_declared(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    place_op = spec["paths"][ORDERS]["post"]
    assert [p["name"] for p in place_op["parameters"]] == ["Idempotency-Key"]
    assert place_op["parameters"][0]["in"] == "header" and place_op["parameters"][0]["required"]
    assert "201" in place_op["responses"] and "Idempotent-Replayed" in place_op["responses"]["201"]["headers"]
    assert set(spec["paths"][f"{ORDERS}/{{id}}"]["get"]["responses"]) >= {"200", "401", "404"}


def test_without_zoho_credentials_orders_stay_queued(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    (pid,) = run(priced_products(database, 1, stock=5, skip=32))
    order = place(api, shoppers[0], [{"product_id": pid, "quantity": 1}]).json()
    ready = api.get("/ready").json()["orders"]
    assert ready["push"] is False and "ZOHO_CLIENT_ID" in ready["missing"]
    assert ready["counts"]["placed"] >= 0
    time.sleep(0.3)
    rows = run(database.fetch("SELECT state, attempts FROM order_outbox WHERE order_id = $1", order["id"]))
    assert [tuple(r) for r in rows] == [("pending", 0)]


def test_orders_policy_limits_each_shopper_on_its_own(
    database: Database, services: Services, tmp_path: Path, shoppers: list[Shopper]
) -> None:
    (pid,) = run(priced_products(database, 1, stock=50, skip=34))
    expired = new_key()
    run(
        database.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status, body, expires_at) "
            "VALUES ($1, $2, sha256('x'), 201, '{}', now() - interval '1 second')",
            shoppers[2].id,
            expired,
        )
    )
    limited = ServerProcess(
        database,
        services,
        tmp_path,
        **JWT_ENV,
        PROCESSES="1",
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_ORDERS="3/60s;burst=3",
        REDIS_KEY_PREFIX=f"ol{new_key()[:8]}:",
    ).start()
    try:
        with limited.client() as client:
            answers = [place(client, shoppers[0], [{"product_id": pid, "quantity": 1}]) for _ in range(4)]
            assert [r.status_code for r in answers] == [201, 201, 201, 429]
            assert answers[0].headers["ratelimit-policy"] == '"orders";q=3;w=60'
            assert answers[3].json()["code"] == "rate_limited" and int(answers[3].headers["retry-after"]) >= 1
            # Keyed by the shopper, not the address: another shopper from the same address still orders.
            assert place(client, shoppers[1], [{"product_id": pid, "quantity": 1}]).status_code == 201
        # Each process purges expired keys when it starts, then every minute.
        gone = "SELECT count(*) AS n FROM idempotency_keys WHERE key = $1"
        wait_for(lambda: run(database.fetch(gone, expired))[0]["n"] == 0, 10, step=0.05)
    finally:
        limited.stop()


def test_an_expired_key_is_free_again(api: httpx.Client, database: Database, shoppers: list[Shopper]) -> None:
    (pid,) = run(priced_products(database, 1, stock=5, skip=36))
    key, user = new_key(), shoppers[1]
    run(
        database.execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, status, body, expires_at) "
            "VALUES ($1, $2, sha256('another body'), 201, '{\"id\": 1}', now() - interval '1 second')",
            user.id,
            key,
        )
    )
    resp = place(api, user, [{"product_id": pid, "quantity": 1}], key)
    assert resp.status_code == 201 and "idempotent-replayed" not in resp.headers
    again = place(api, user, [{"product_id": pid, "quantity": 1}], key)
    assert again.headers["idempotent-replayed"] == "true" and again.json()["id"] == resp.json()["id"]
    rows = run(
        database.fetch(
            "SELECT order_id, expires_at > now() + interval '23 hours' AS live "
            "FROM idempotency_keys WHERE key = $1",
            key,
        )
    )
    assert [tuple(r) for r in rows] == [(resp.json()["id"], True)]


def _order_counts(api: httpx.Client) -> tuple[float, float]:
    """(orders_placed_total, orders_refused_total{reason="insufficient_stock"}) summed over processes."""
    text = api.get("/metrics").text  # the test client is on loopback, a METRICS_NETWORKS address
    placed = refused = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "orders_placed_total":
                placed += sample.value
            elif (
                sample.name == "orders_refused_total" and sample.labels.get("reason") == "insufficient_stock"
            ):
                refused += sample.value
    return placed, refused


def test_orders_placed_and_refused_are_counted_in_metrics(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    (a,) = run(priced_products(database, 1, stock=1, skip=12))
    # The baseline once every process's snapshot holds the earlier tests' orders (METRICS_FLUSH_S, 0.5 s).
    placed, refused = _order_counts(api)
    for _ in range(10):
        time.sleep(1.2)
        settled = _order_counts(api)
        if settled == (placed, refused):
            break
        placed, refused = settled
    assert place(api, shoppers[1], [{"product_id": a, "quantity": 1}]).status_code == 201
    key = new_key()
    assert place(api, shoppers[1], [{"product_id": a, "quantity": 1}], key).status_code == 409
    # Both processes' counts: another process's arrive with its next snapshot (METRICS_FLUSH_S).
    wait_for(lambda: _order_counts(api) == (placed + 1, refused + 1), timeout=5, step=0.1)
