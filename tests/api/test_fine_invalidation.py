"""Fine-grained invalidation: a write reaches exactly the cached answers it changes (the index's stamps,
server/catalog/live.py). A stock change to one product leaves every page that does not show it cached (same
ETag, no query), and is served on the pages that show it, by every process, within a second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from catalog_testlib import Database, ServerProcess, Services, run, timing

PRODUCTS = "/api/consumer/products"
CLOSE = {"Connection": "close"}


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Two processes sharing Redis, as deployed (the index is on by default)."""
    proc = ServerProcess(database, services, tmp_path_factory.mktemp("srv"), PROCESSES="2").start()
    yield proc
    proc.stop()


def served_by_all(client: httpx.Client, url: str, times: int = 12) -> list[httpx.Response]:
    """`times` answers over fresh connections (so both processes answer some)."""
    return [client.get(url, headers=CLOSE) for _ in range(times)]


def warm(client: httpx.Client, url: str) -> str:
    """Fill the page in both processes; return its ETag once both answer it from their cache (answers made
    from the index stay in each process's L1, so each process must have made it once)."""
    hit_by: set[int] = set()
    for _ in range(40):
        answers = served_by_all(client, url)
        hit_by |= {timing(r)[1] for r in answers if timing(r)[0] == 0}
        if len(hit_by) == 2 and all(timing(r)[0] == 0 for r in answers):
            etags = {r.headers["etag"] for r in answers}
            assert len(etags) == 1, etags
            return etags.pop()
    raise AssertionError(f"{url} never came from the cache of both processes")


def wait_for(client: httpx.Client, url: str, check: Callable[[Any], bool], budget_s: float = 1.0) -> float:
    """Seconds until every answer over fresh connections passes `check`."""
    started = time.monotonic()
    while time.monotonic() - started < budget_s * 3:
        if all(check(r.json()) for r in served_by_all(client, url, 8)):
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"{url}: the change never reached every process")


def set_stock(db: Database, product_id: int, stock: int) -> None:
    run(db.execute("UPDATE products SET stock_on_hand = $1 WHERE id = $2", stock, product_id))


def test_a_stock_change_keeps_pages_that_do_not_show_the_product(
    server: ServerProcess, database: Database
) -> None:
    shown = f"{PRODUCTS}?page_size=20&sort=name"
    elsewhere = f"{PRODUCTS}?page_size=20&sort=name&page=4"
    by_price = f"{PRODUCTS}?page_size=30&sort=-price&page=2"
    with server.client() as client:
        items = client.get(shown).json()["items"]
        product = next(i for i in items if i["stock"] > 0)
        other_ids = {i["id"] for i in client.get(elsewhere).json()["items"]}
        assert product["id"] not in other_ids
        detail = f"{PRODUCTS}/{min(other_ids)}"
        keep = {url: warm(client, url) for url in (elsewhere, detail, by_price)}
        priced_ids = {i["id"] for i in client.get(by_price).json()["items"]}
        if product["id"] in priced_ids:  # (it would change too: only check pages that do not show it)
            del keep[by_price]
        old_etag = warm(client, shown)

        set_stock(database, product["id"], product["stock"] + 5)

        def restocked(doc: Any) -> bool:
            return any(i["id"] == product["id"] and i["stock"] == product["stock"] + 5 for i in doc["items"])

        took = wait_for(client, shown, restocked)
        assert took < 1.0
        assert client.get(shown).headers["etag"] != old_etag
        for url, etag in keep.items():
            for resp in served_by_all(client, url):
                assert resp.headers["etag"] == etag, url
                assert timing(resp)[0] == 0, f"{url} was recomputed after an unrelated stock change"
        ready = client.get("/ready").json()["catalog"]["index"]
        assert ready["applied"] >= 1


def test_running_out_of_stock_changes_the_in_stock_lists_only(
    server: ServerProcess, database: Database
) -> None:
    in_stock = f"{PRODUCTS}?page_size=50&in_stock=true&sort=newest"
    out_of_stock = f"{PRODUCTS}?page_size=200&in_stock=false"
    far = f"{PRODUCTS}?page_size=10&sort=name&page=30"
    with server.client() as client:
        product = next(i for i in client.get(in_stock).json()["items"] if i["stock"] > 0)
        assert product["id"] not in {i["id"] for i in client.get(far).json()["items"]}
        far_etag = warm(client, far)
        warm(client, in_stock)
        total_out = client.get(out_of_stock).json()["total"]

        set_stock(database, product["id"], 0)
        wait_for(client, in_stock, lambda d: product["id"] not in {i["id"] for i in d["items"]})
        wait_for(client, out_of_stock, lambda d: d["total"] == total_out + 1)
        for resp in served_by_all(client, far):
            assert resp.headers["etag"] == far_etag and timing(resp)[0] == 0


def test_unknown_and_inactive_products_are_404_without_a_query(
    server: ServerProcess, database: Database
) -> None:
    run(database.execute("UPDATE products SET is_active = false WHERE id = 3"))
    with server.client() as client:
        wait_for(client, f"{PRODUCTS}?page_size=200", lambda d: 3 not in {i["id"] for i in d["items"]})
        for url in (f"{PRODUCTS}/3", f"{PRODUCTS}/2000000000"):
            for resp in served_by_all(client, url, 6):
                assert resp.status_code == 404, url
                assert timing(resp)[0] == 0, url
        run(database.execute("UPDATE products SET is_active = true WHERE id = 3"))
        wait_for(client, f"{PRODUCTS}/3", lambda d: d.get("id") == 3)


def test_categories_stay_cached_under_stock_changes_and_follow_what_counts(
    server: ServerProcess, database: Database
) -> None:
    categories = "/api/consumer/categories?page_size=200"
    with server.client() as client:
        etag = warm(client, categories)
        product = client.get(f"{PRODUCTS}?page_size=1&in_stock=true").json()["items"][0]
        cat = product["category"]["id"]
        set_stock(database, product["id"], product["stock"] + 3)
        wait_for(client, f"{PRODUCTS}/{product['id']}", lambda d: d["stock"] == product["stock"] + 3)
        # Counts do not depend on stock: the categories answer is the same entry, no query.
        for resp in served_by_all(client, categories):
            assert resp.headers["etag"] == etag and timing(resp)[0] == 0
        # A product leaving the list changes the counts of its category (and its ancestors).
        before = {i["id"]: i["product_count"] for i in client.get(categories).json()["items"]}
        run(database.execute("UPDATE products SET is_active = false WHERE id = $1", product["id"]))
        try:
            wait_for(
                client,
                categories,
                lambda d: {i["id"]: i["product_count"] for i in d["items"]}.get(cat) == before[cat] - 1,
            )
        finally:
            run(database.execute("UPDATE products SET is_active = true WHERE id = $1", product["id"]))


def test_searches_stay_cached_under_stock_changes_and_follow_renames(
    server: ServerProcess, database: Database
) -> None:
    # The search's hits are remembered per search version (text and presence changes), and its pages are
    # keyed by their stamp: a stock change to a product the page does not show costs no query at all.
    url = f"{PRODUCTS}?q=sku&page_size=10&sort=-price"
    with server.client() as client:
        first = client.get(url).json()
        shown = {i["id"] for i in first["items"]}
        other = next(
            r[0]
            for r in run(database.fetch("SELECT id FROM products WHERE is_active AND stock_on_hand > 0"))
            if r[0] not in shown
        )
        etag = warm(client, url)
        set_stock(database, other, 42)
        wait_for(client, f"{PRODUCTS}/{other}", lambda d: d["stock"] == 42)
        for resp in served_by_all(client, url):
            assert resp.headers["etag"] == etag and timing(resp)[0] == 0, "a stock change re-ran the search"

        # A rename that makes a product match (and one that makes another stop) is served within a second.
        term = "zebrafish"
        search = f"{PRODUCTS}?q={term}"
        assert client.get(search).json()["total"] == 0
        run(database.execute("UPDATE products SET name = name || ' Zebrafish' WHERE id = $1", other))
        took = wait_for(client, search, lambda d: [i["id"] for i in d["items"]] == [other])
        assert took < 1.0
