"""The row stores (server/catalog/rows.py): with the page cache off, a page or detail whose rows were shown
before costs no query, and every write is still served at once: a changed row is fetched again (only it),
a category rename or an image added or removed reaches every page. The answers equal the SQL path's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, run, timing

PRODUCTS = "/api/consumer/products"
PAGE = f"{PRODUCTS}?page_size=40&sort=name"


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One process, page cache off: every answer is made (from the stores or SQL)."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("srv"),
        PROCESSES="1",
        CACHE_ENABLED="false",
        IMAGE_REFRESH_INTERVAL_S="0.05",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def reference(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The SQL path on the same database (no index, no stores)."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("ref"),
        PROCESSES="1",
        CACHE_ENABLED="false",
        CATALOG_INDEX="false",
        IMAGE_REFRESH_INTERVAL_S="0.05",
    ).start()
    yield proc
    proc.stop()


def store(client: httpx.Client, name: str) -> dict[str, int]:
    """The server's counters of one store (/ready)."""
    report: dict[str, int] = client.get("/ready").json()["catalog"]["index"][name]
    return report


def index_report(client: httpx.Client) -> dict[str, Any]:
    """The server's list index counters (/ready)."""
    report: dict[str, Any] = client.get("/ready").json()["catalog"]["index"]
    return report


def wait_for(check: Callable[[], bool], budget_s: float) -> None:
    deadline = time.monotonic() + budget_s
    while not check():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.02)


def settle(
    client: httpx.Client, url: str, check: Callable[[Any], bool], budget_s: float = 3.0
) -> httpx.Response:
    """The first answer that passes `check` (a write reaches the index within milliseconds)."""
    deadline = time.monotonic() + budget_s
    while True:
        resp = client.get(url)
        assert resp.status_code == 200, resp.text
        if check(resp.json()):
            return resp
        assert time.monotonic() < deadline, f"{url}: the write never arrived"
        time.sleep(0.02)


def same_as_sql(ours: httpx.Client, sql: httpx.Client, url: str) -> None:
    a, b = ours.get(url), sql.get(url)
    assert a.status_code == b.status_code == 200
    # Byte for byte (items, meta, image URLs), each server's own base URL aside.
    assert a.content.replace(str(ours.base_url).encode(), b"") == b.content.replace(
        str(sql.base_url).encode(), b""
    )


def test_a_page_shown_before_costs_no_query(server: ServerProcess, reference: ServerProcess) -> None:
    with server.client() as client, reference.client() as sql:
        first = client.get(PAGE)
        assert timing(first)[0] == 1  # the rows, by primary key
        before = store(client, "item_store")
        again = client.get(PAGE)
        assert timing(again)[0] == 0
        assert again.content == first.content
        after = store(client, "item_store")
        assert after["hits"] - before["hits"] == 40
        assert after["misses"] == before["misses"]
        # Another page sharing some rows fetches only the others.
        shifted = client.get(f"{PRODUCTS}?page_size=50&sort=name")
        assert timing(shifted)[0] == 1
        assert store(client, "item_store")["misses"] - after["misses"] == 10
        same_as_sql(client, sql, PAGE)
        same_as_sql(client, sql, f"{PRODUCTS}?page_size=50&sort=name")


def test_a_changed_row_is_fetched_again_and_only_it(
    server: ServerProcess, reference: ServerProcess, database: Database
) -> None:
    with server.client() as client, reference.client() as sql:
        items = client.get(PAGE).json()["items"]
        client.get(PAGE)  # all kept
        target = items[7]
        new_stock = target["stock"] + 11
        before, refilled = store(client, "item_store"), index_report(client)["items_refilled"]
        run(database.execute("UPDATE products SET stock_on_hand = $1 WHERE id = $2", new_stock, target["id"]))

        def restocked(doc: Any) -> bool:
            return any(i["id"] == target["id"] and i["stock"] == new_stock for i in doc["items"])

        resp = settle(client, PAGE, restocked)
        # Fetched again once, only it: by the feed right after its catch-up (kept: it was shown), or by
        # the page when the page came first; the page then costs no query.
        wait_for(lambda: index_report(client)["items_refilled"] == refilled + 1, 5.0)
        misses = store(client, "item_store")["misses"] - before["misses"]
        assert misses <= 1 and timing(resp)[0] == misses
        assert timing(client.get(PAGE))[0] == 0
        same_as_sql(client, sql, PAGE)

        # A price change (product_prices) moves the row version too.
        run(
            database.execute(
                "UPDATE product_prices SET price = price + 1 WHERE product_id = $1"
                " AND price_list_id = (SELECT id FROM price_lists WHERE code = 'consumer')",
                target["id"],
            )
        )
        settle(
            client,
            PAGE,
            lambda doc: any(i["id"] == target["id"] and i["price"] != target["price"] for i in doc["items"]),
        )
        same_as_sql(client, sql, PAGE)


def test_a_category_rename_reaches_every_stored_row(
    server: ServerProcess, reference: ServerProcess, database: Database
) -> None:
    with server.client() as client, reference.client() as sql:
        items = client.get(PAGE).json()["items"]
        shown = next(i for i in items if i["category"] is not None)
        cid = shown["category"]["id"]
        new_name = shown["category"]["name"] + " (renamed)"
        run(database.execute("UPDATE categories SET name = $1 WHERE id = $2", new_name, cid))

        def renamed(doc: Any) -> bool:
            return all(
                i["category"]["name"] == new_name
                for i in doc["items"]
                if i["category"] and i["category"]["id"] == cid
            )

        settle(client, PAGE, renamed)
        same_as_sql(client, sql, PAGE)
        detail = f"{PRODUCTS}/{shown['id']}"
        settle(client, detail, lambda doc: doc["category"]["name"] == new_name)
        same_as_sql(client, sql, detail)


def test_a_new_category_keeps_every_stored_row_and_answer(
    server: ServerProcess, reference: ServerProcess, database: Database
) -> None:
    # A category that did not exist changes no row (a row shows its product's own category) and no answer
    # but the categories pages that list it: the stores and the index generation stay (a sync's first
    # import creates its categories while the API serves). Once it exists, a change to it is a change.
    categories = "/api/consumer/categories?page_size=200"
    with server.client() as client, reference.client() as sql:
        items = client.get(PAGE).json()["items"]
        target = items[3]
        detail = f"{PRODUCTS}/{target['id']}"
        client.get(detail)
        assert timing(client.get(PAGE))[0] == 0  # every row kept
        before = index_report(client)
        cid = run(
            database.fetch(
                "INSERT INTO categories (zoho_category_id, name, sort_order) "
                "VALUES ('t-new-cat', 'A new one', 0) RETURNING id"
            )
        )[0]["id"]
        try:
            settle(client, categories, lambda doc: any(c["id"] == cid for c in doc["items"]))
            after = index_report(client)
            assert after["category_loads"] == before["category_loads"] + 1
            assert after["structure"] == before["structure"]
            assert timing(client.get(PAGE))[0] == 0 and timing(client.get(detail))[0] == 0  # still kept
            for url in (PAGE, detail, categories):
                same_as_sql(client, sql, url)
            # A product moved into it shows it (only its row is fetched again).
            run(database.execute("UPDATE products SET category_id = $1 WHERE id = $2", cid, target["id"]))
            settle(client, detail, lambda doc: doc["category"]["id"] == cid)
            same_as_sql(client, sql, PAGE)
            # Renamed, it existed before the change: every row and answer follows.
            run(database.execute("UPDATE categories SET name = 'Renamed' WHERE id = $1", cid))
            settle(
                client,
                PAGE,
                lambda doc: any(i["category"] and i["category"]["name"] == "Renamed" for i in doc["items"]),
            )
            assert index_report(client)["structure"] > after["structure"]
            for url in (PAGE, detail, categories):
                same_as_sql(client, sql, url)
        finally:
            category = target["category"]["id"] if target["category"] else None
            run(
                database.execute("UPDATE products SET category_id = $1 WHERE id = $2", category, target["id"])
            )
            run(database.execute("DELETE FROM categories WHERE id = $1", cid))


def test_an_image_added_or_removed_reaches_stored_rows(
    server: ServerProcess, reference: ServerProcess, database: Database
) -> None:
    with server.client() as client, reference.client() as sql:
        items = client.get(PAGE).json()["items"]
        bare = next(i for i in items if not i["has_image"])
        client.get(PAGE)
        client.get(f"{PRODUCTS}/{bare['id']}")
        source = next(p for p in database.uploads.glob("*.jpg") if not p.is_symlink())
        added = database.uploads / f"{bare['zoho_item_id']}.jpg"
        added.write_bytes(source.read_bytes())
        try:
            flagged = settle(
                client, PAGE, lambda doc: any(i["id"] == bare["id"] and i["has_image"] for i in doc["items"])
            )
            shown = next(i for i in flagged.json()["items"] if i["id"] == bare["id"])
            assert shown["image_url"].endswith(f"/product-images/{bare['zoho_item_id']}.jpg")
            settle(client, f"{PRODUCTS}/{bare['id']}", lambda doc: doc["has_image"])
            settle(sql, PAGE, lambda doc: any(i["id"] == bare["id"] and i["has_image"] for i in doc["items"]))
            same_as_sql(client, sql, PAGE)
        finally:
            added.unlink()
        settle(
            client, PAGE, lambda doc: any(i["id"] == bare["id"] and not i["has_image"] for i in doc["items"])
        )
        settle(client, f"{PRODUCTS}/{bare['id']}", lambda doc: not doc["has_image"])


def test_a_detail_shown_before_costs_no_query_until_it_changes(
    server: ServerProcess, reference: ServerProcess, database: Database
) -> None:
    with server.client() as client, reference.client() as sql:
        pid = client.get(PAGE).json()["items"][3]["id"]
        url = f"{PRODUCTS}/{pid}"
        first = client.get(url)
        again = client.get(url)
        assert timing(again)[0] == 0
        assert again.content == first.content
        # A price in another list is in the detail only: it moves the row version as well.
        run(
            database.execute(
                "UPDATE product_prices SET price = price + 2 WHERE product_id = $1"
                " AND price_list_id ="
                " (SELECT id FROM price_lists WHERE code <> 'consumer' ORDER BY id LIMIT 1)",
                pid,
            )
        )
        changed = settle(client, url, lambda doc: doc != first.json())
        assert timing(changed)[0] == 1
        same_as_sql(client, sql, url)
        # Deactivated: a 404 at once, never the kept bytes.
        run(database.execute("UPDATE products SET is_active = false WHERE id = $1", pid))
        deadline = time.monotonic() + 3
        while client.get(url).status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        run(database.execute("UPDATE products SET is_active = true WHERE id = $1", pid))
        settle(client, url, lambda doc: doc["id"] == pid)
        same_as_sql(client, sql, url)


def test_a_new_product_is_kept_before_a_page_shows_it(
    server: ServerProcess, reference: ServerProcess, database: Database
) -> None:
    # A sync's new products land on first pages: the feed fetches their list items right after its
    # catch-up, so the page that first shows one costs no query.
    with server.client() as client, reference.client() as sql:
        client.get(PAGE)
        refilled = index_report(client)["items_refilled"]
        (new_id,) = run(
            database.fetch(
                "INSERT INTO products (zoho_item_id, sku, name, stock_on_hand)"
                " VALUES ('kept-first', 'SKU-KEPT', '  Aardvark first', 3) RETURNING id"
            )
        )[0]
        wait_for(lambda: index_report(client)["items_refilled"] == refilled + 1, 5.0)
        resp = settle(client, PAGE, lambda doc: doc["items"][0]["id"] == new_id)
        assert timing(resp)[0] == 0
        same_as_sql(client, sql, PAGE)
