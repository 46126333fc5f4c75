"""The image index's product map follows product changes from the change feed (only the changed products,
ImageIndex.update_catalog), in every process, without reloading the whole map."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from catalog_testlib import Database, ServerProcess, run, timing

PRODUCTS = "/api/consumer/products"
CLOSE = {"Connection": "close"}


def ready_by_pid(server: ServerProcess) -> dict[int, dict[str, Any]]:
    """The /ready catalog line of each process (the kernel spreads connections over the processes)."""
    seen: dict[int, dict[str, Any]] = {}
    with server.client() as client:
        for _ in range(40):
            doc = client.get("/ready", headers=CLOSE).json()
            seen[doc["pid"]] = doc["catalog"]
    return seen


def every_process(server: ServerProcess, url: str, check: Callable[[Any], bool], pids: set[int]) -> None:
    """Poll until each process has answered `url` with check(response) true."""
    seen: set[int] = set()
    deadline = time.monotonic() + 5
    with server.client() as client:
        while time.monotonic() < deadline:
            resp = client.get(url, headers=CLOSE)
            if check(resp):
                seen.add(timing(resp)[1])
                if seen >= pids:
                    return
    raise AssertionError(f"only {seen} of {pids} served the change to {url}")


def has_image(resp: Any) -> bool:
    return resp.status_code == 200 and resp.json()["has_image"] is True


def has_no_image(resp: Any) -> bool:
    return resp.status_code == 200 and resp.json()["has_image"] is False


def test_map_follows_renames_and_deactivations(server: ServerProcess, database: Database) -> None:
    before = ready_by_pid(server)
    pids = set(before)
    with server.client() as client:
        items = client.get(PRODUCTS, params={"page_size": 200}).json()["items"]
    with_image = next(i for i in items if i["has_image"])
    without = next(i for i in items if not i["has_image"])
    # The name with a file moves from one product to the other: the old name leaves the first product.
    run(
        database.execute(
            "UPDATE products SET zoho_item_id = $1 WHERE id = $2", "moved-away", with_image["id"]
        )
    )
    every_process(server, f"{PRODUCTS}/{with_image['id']}", has_no_image, pids)
    run(
        database.execute(
            "UPDATE products SET zoho_item_id = $1 WHERE id = $2", with_image["zoho_item_id"], without["id"]
        )
    )
    every_process(server, f"{PRODUCTS}/{without['id']}", has_image, pids)
    # Deactivated, the product leaves the map; active again, it comes back with its image.
    run(database.execute("UPDATE products SET is_active = false WHERE id = $1", without["id"]))
    every_process(server, f"{PRODUCTS}/{without['id']}", lambda r: r.status_code == 404, pids)
    run(database.execute("UPDATE products SET is_active = true WHERE id = $1", without["id"]))
    every_process(server, f"{PRODUCTS}/{without['id']}", has_image, pids)
    after = ready_by_pid(server)
    assert set(after) == pids
    for pid in pids:
        assert after[pid]["map_loads"] == before[pid]["map_loads"]  # never the whole map
        assert after[pid]["map_updates"] >= before[pid]["map_updates"] + 1


def test_a_gap_in_the_feed_loads_the_whole_map(server: ServerProcess, database: Database) -> None:
    before = ready_by_pid(server)
    with server.client() as client:
        item = next(
            i for i in client.get(PRODUCTS, params={"page_size": 200}).json()["items"] if i["has_image"]
        )
    # A TRUNCATE-like change of every product (ids unknown) cannot be applied product by product.
    run(database.execute("SELECT catalog_record_change('products', NULL, 'products')"))
    every_process(server, f"{PRODUCTS}/{item['id']}", has_image, set(before))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = ready_by_pid(server)
        if all(after[p]["map_loads"] > before[p]["map_loads"] for p in before if p in after):
            return
        time.sleep(0.1)
    raise AssertionError(f"no full load: {before} -> {after}")
