"""Orders under concurrency: no overselling (one product, many; multi-line orders in random line order: no
deadlock), one key sent at once many times makes one order, and the catalog shows an order's stock within a
second without emptying unrelated pages."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, run
from orders_testlib import (
    JWT_ENV,
    ORDERS,
    Shopper,
    make_shoppers,
    new_key,
    post_many,
    priced_products,
    stock_of,
)


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


def place(api: httpx.Client, shopper: Shopper, lines: list[dict[str, int]]) -> httpx.Response:
    return api.post(ORDERS, json={"lines": lines}, headers=shopper.headers(new_key()))


def test_concurrent_orders_for_one_product_never_oversell(
    server: ServerProcess, database: Database, shoppers: list[Shopper]
) -> None:
    (pid,) = run(priced_products(database, 1, stock=20, skip=10))
    requests = [
        (shoppers[i % 3], new_key(), {"lines": [{"product_id": pid, "quantity": 1}]}) for i in range(60)
    ]
    answers = run(post_many(server.base_url, requests))
    statuses = [r.status_code for r in answers]
    assert statuses.count(201) == 20 and statuses.count(409) == 40, statuses
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"insufficient_stock"}
    assert run(stock_of(database, [pid])) == {pid: 0}
    sold = run(
        database.fetch("SELECT coalesce(sum(quantity), 0) AS n FROM order_lines WHERE product_id = $1", pid)
    )
    assert sold[0]["n"] == 20


def test_concurrent_multi_line_orders_in_random_line_order_no_deadlock_no_oversell(
    server: ServerProcess, database: Database, shoppers: list[Shopper]
) -> None:
    ids = run(priced_products(database, 8, stock=30, skip=12))
    rng = random.Random(13)
    requests = []
    for i in range(150):
        chosen = rng.sample(ids, rng.randint(2, 5))  # random line order: the server locks in id order
        lines = [{"product_id": p, "quantity": rng.randint(1, 4)} for p in chosen]
        requests.append((shoppers[i % 3], new_key(), {"lines": lines}))
    answers = run(post_many(server.base_url, requests))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {201, 409}, [r.text for r in answers if r.status_code not in (201, 409)][:3]
    assert statuses.count(201) > 0
    stock = run(stock_of(database, ids))
    assert min(stock.values()) >= 0
    sold = run(
        database.fetch(
            "SELECT l.product_id, sum(l.quantity) AS n FROM order_lines l JOIN orders o ON o.id = l.order_id "
            "WHERE o.status <> 'cancelled' AND l.product_id = ANY($1::int[]) GROUP BY l.product_id",
            ids,
        )
    )
    sold_by = {r["product_id"]: r["n"] for r in sold}
    assert all(stock[p] + sold_by.get(p, 0) == 30 for p in ids), (stock, sold_by)
    placed = {r.json()["id"] for r in answers if r.status_code == 201}
    assert len(placed) == statuses.count(201)


def test_one_key_sent_ten_times_at_once_makes_one_order(
    server: ServerProcess, api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    (pid,) = run(priced_products(database, 1, stock=50, skip=20))
    key, user = new_key(), shoppers[2]
    body = {"lines": [{"product_id": pid, "quantity": 3}]}
    answers = run(post_many(server.base_url, [(user, key, body)] * 10))
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1, statuses
    assert {r.json()["code"] for r in answers if r.status_code == 409} <= {"idempotency_key_in_use"}
    ids = {r.json()["id"] for r in answers if r.status_code == 201}
    assert len(ids) == 1
    late = api.post(ORDERS, json=body, headers=user.headers(key))
    assert late.status_code == 201 and late.headers["idempotent-replayed"] == "true"
    assert late.json()["id"] in ids
    assert run(stock_of(database, [pid])) == {pid: 47}


def test_order_reaches_the_catalog_within_a_second_and_spares_unrelated_pages(
    api: httpx.Client, database: Database, shoppers: list[Shopper]
) -> None:
    ordered, unrelated = run(priced_products(database, 2, stock=9, skip=30))
    detail = f"/api/consumer/products/{ordered}"
    other = f"/api/consumer/products/{unrelated}"
    time.sleep(0.3)  # the stock set-up above has reached every process
    assert api.get(detail).json()["stock"] == 9
    etag = api.get(other).headers["etag"]
    assert place(api, shoppers[0], [{"product_id": ordered, "quantity": 4}]).status_code == 201
    placed = time.monotonic()

    def stock_now() -> int:  # a fresh connection each time: either process may answer
        with httpx.Client(base_url=str(api.base_url), timeout=5) as fresh:
            return int(fresh.get(detail).json()["stock"])

    while stock_now() != 5:
        assert time.monotonic() - placed < 1.0, "the order's stock change did not reach the catalog in 1 s"
        time.sleep(0.01)
    assert all(stock_now() == 5 for _ in range(6))
    assert time.monotonic() - placed < 1.5
    kept = api.get(other, headers={"If-None-Match": etag})
    assert kept.status_code == 304, kept.headers
