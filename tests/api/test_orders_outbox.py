"""The push of orders to Zoho through the outbox, against the fake Zoho: every order becomes exactly one
sales order (two processes share the work), an outage is retried with backoff until Zoho is back, and a
created sales order whose answer was lost is found by reference number instead of made twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from admin_testlib import wait_for
from catalog_testlib import Database, ServerProcess, Services, run
from fakes.zoho import FakeZoho
from orders_testlib import JWT_ENV, ORDERS, Shopper, make_shoppers, new_key, priced_products

CUSTOMER = "4600000000001"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeZoho]:
    with FakeZoho() as zoho:
        yield zoho


@pytest.fixture(scope="module")
def products(database: Database, fake: FakeZoho) -> list[int]:
    """Products the fake knows (sales order lines must name Zoho items)."""
    ids = run(priced_products(database, 6, stock=1000, skip=40))
    rows = run(database.fetch("SELECT id, zoho_item_id, name FROM products WHERE id = ANY($1::int[])", ids))
    for row in rows:
        fake.catalog.add_item(name=row["name"], item_id=row["zoho_item_id"])
    return ids


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, fake: FakeZoho, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two processes pushing to the fake; quick polls and backoff; the sync schedule off."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("outbox"),
        **JWT_ENV,
        **fake.settings_env(),
        ZOHO_ORDER_CUSTOMER_ID=CUSTOMER,
        ZOHO_SYNC_INTERVAL_S="0",
        ZOHO_SYNC_FULL_AT="",
        ZOHO_RATE_PER_MIN="100000",  # the fake has no limit: the budget must not hold pushes back
        ZOHO_MAX_RETRIES="0",  # each outbox attempt is one call: the outbox's own backoff is under test
        ORDER_OUTBOX_POLL_S="0.1",
        ORDER_OUTBOX_BACKOFF_BASE_S="0.2",
        ORDER_OUTBOX_BACKOFF_MAX_S="0.5",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shopper(database: Database) -> Shopper:
    return run(make_shoppers(database, 1))[0]


def place(api: httpx.Client, shopper: Shopper, lines: list[dict[str, int]]) -> dict[str, Any]:
    resp = api.post(ORDERS, json={"lines": lines, "notes": "gift"}, headers=shopper.headers(new_key()))
    assert resp.status_code == 201, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


def sales_orders(fake: FakeZoho, number: str) -> list[dict[str, Any]]:
    with fake.catalog.lock:
        return [so for so in fake.catalog.salesorders if so["reference_number"] == number]


def outbox_row(database: Database, order_id: int) -> dict[str, Any]:
    rows = run(database.fetch("SELECT * FROM order_outbox WHERE order_id = $1", order_id))
    return dict(rows[0])


def test_every_order_becomes_exactly_one_sales_order(
    api: httpx.Client, fake: FakeZoho, products: list[int], shopper: Shopper, database: Database
) -> None:
    orders = [
        place(
            api,
            shopper,
            [{"product_id": products[i % 6], "quantity": 2}, {"product_id": products[5], "quantity": 1}],
        )
        for i in range(12)
    ]
    wait_for(lambda: all(sales_orders(fake, o["number"]) for o in orders), 15, step=0.05)
    for order in orders:
        (so,) = sales_orders(fake, order["number"])
        assert so["customer_id"] == CUSTOMER and so["notes"] == "gift"
        zoho_ids = {
            r["zoho_item_id"]: r["id"] for r in run(database.fetch("SELECT id, zoho_item_id FROM products"))
        }
        assert [(zoho_ids[li["item_id"]], li["quantity"]) for li in so["line_items"]] == [
            (line["product_id"], line["quantity"]) for line in order["lines"]
        ]
        assert [str(li["rate"]) for li in so["line_items"]] == [
            str(float(line["unit_price"])) for line in order["lines"]
        ]
    time.sleep(0.3)  # a second push of any order would show up now
    assert all(len(sales_orders(fake, o["number"])) == 1 for o in orders)
    first = orders[0]
    wait_for(lambda: outbox_row(database, first["id"])["state"] == "sent", 5, step=0.05)
    row = outbox_row(database, first["id"])
    assert row["zoho_salesorder_id"] == sales_orders(fake, first["number"])[0]["salesorder_id"]
    assert row["attempts"] == 1 and row["last_error"] is None
    detail = api.get(f"{ORDERS}/{first['id']}", headers=shopper.headers()).json()
    assert detail["status"] == "confirmed" and detail["zoho"] == {
        "state": "sent",
        "salesorder_id": row["zoho_salesorder_id"],
    }
    late = api.post(f"{ORDERS}/{first['id']}/cancel", headers=shopper.headers())
    assert late.status_code == 409 and late.json()["code"] == "order_not_cancellable"
    ready = api.get("/ready").json()["orders"]
    assert ready["push"] is True


def test_outage_is_retried_with_backoff_until_zoho_is_back(
    api: httpx.Client, fake: FakeZoho, products: list[int], shopper: Shopper, database: Database
) -> None:
    fake.down = True
    try:
        order = place(api, shopper, [{"product_id": products[0], "quantity": 1}])
        wait_for(lambda: outbox_row(database, order["id"])["attempts"] >= 3, 10, step=0.05)
        row = outbox_row(database, order["id"])
        assert row["state"] == "pending" and row["last_error"].startswith("ZohoError")
        assert not sales_orders(fake, order["number"])
        pending = api.get(f"{ORDERS}/{order['id']}", headers=shopper.headers()).json()
        assert pending["status"] == "pending" and pending["zoho"]["state"] == "pending"
    finally:
        fake.down = False
    wait_for(lambda: outbox_row(database, order["id"])["state"] == "sent", 10, step=0.05)
    assert len(sales_orders(fake, order["number"])) == 1
    assert outbox_row(database, order["id"])["last_error"] is None


def test_lost_answer_is_found_by_reference_not_created_twice(
    api: httpx.Client, fake: FakeZoho, products: list[int], shopper: Shopper, database: Database
) -> None:
    fake.lose_created = 1
    order = place(api, shopper, [{"product_id": products[1], "quantity": 3}])
    wait_for(lambda: outbox_row(database, order["id"])["state"] == "sent", 10, step=0.05)
    row = outbox_row(database, order["id"])
    assert row["attempts"] >= 2  # the lost answer counted as a failed attempt
    (so,) = sales_orders(fake, order["number"])
    assert row["zoho_salesorder_id"] == so["salesorder_id"]


def test_a_cancelled_order_is_never_pushed(
    api: httpx.Client, fake: FakeZoho, products: list[int], shopper: Shopper, database: Database
) -> None:
    fake.down = True
    try:
        order = place(api, shopper, [{"product_id": products[2], "quantity": 1}])
        # While a worker holds the row (an attempt in progress), cancel is a 409 to retry: as a client would.
        deadline = time.monotonic() + 10
        while True:
            resp = api.post(f"{ORDERS}/{order['id']}/cancel", headers=shopper.headers())
            if resp.status_code != 409 or time.monotonic() > deadline:
                break
            assert "being sent" in resp.json()["detail"]
            time.sleep(0.03)
        assert resp.status_code == 200, resp.text
    finally:
        fake.down = False
    time.sleep(0.6)
    assert not sales_orders(fake, order["number"])
    assert outbox_row(database, order["id"])["state"] == "cancelled"
