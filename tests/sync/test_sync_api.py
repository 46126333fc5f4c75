"""A sync against the fake Zoho lands in the catalog the running API serves (products, prices, categories,
images), and the image files follow Zoho: fetched only when the image id or name changed, bad bytes and
bombs refused, removed when Zoho's image is."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from catalog_testlib import Database, ServerProcess
from fakes.zoho import FakeZoho
from PIL import Image
from sync.sync_testlib import SyncEnv, fake_ids, make_env, synced

ITEMS = 300


@pytest.fixture(scope="module")
def env(database: Database) -> Iterator[SyncEnv]:
    with FakeZoho(items=ITEMS) as fake:
        yield make_env(database, fake, ZOHO_SYNC_IMAGES_PER_RUN=1000)


@pytest.fixture(scope="module")
def first_run(env: SyncEnv, server: ServerProcess) -> None:
    result = env.run(full=True)
    assert result.status == "succeeded", result.error


def _served(api: httpx.Client, env: SyncEnv, item_id: str, deadline_s: float = 5.0) -> dict[str, object]:
    """The API's product of a Zoho item, waiting briefly for the catalog to follow the commit."""
    product_id = env.value("SELECT id FROM products WHERE zoho_item_id = $1", item_id)
    end = time.monotonic() + deadline_s
    while True:
        resp = api.get(f"/api/consumer/products/{product_id}")
        if resp.status_code == 200 or time.monotonic() > end:
            return resp.json()  # type: ignore[no-any-return]
        time.sleep(0.05)


def _wait(check: object, deadline_s: float = 5.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.mark.usefixtures("first_run")
def test_full_sync_is_served(api: httpx.Client, env: SyncEnv) -> None:
    assert synced(env, active=None) == ITEMS
    item_id = fake_ids(env)[42]
    zoho = env.fake.catalog.items[item_id]
    body = _served(api, env, item_id)
    assert body["name"] == zoho["name"]
    assert body["name_ar"] == zoho["custom_fields"][0]["value"]
    assert body["description_ar"] == zoho["custom_fields"][1]["value"]
    assert Decimal(str(body["price"])) == Decimal(str(zoho["rate"])).quantize(Decimal("0.01"))
    category = body["category"]
    assert isinstance(category, dict)
    assert category["name"] == env.fake.catalog.categories[zoho["category_id"]]["name"]
    # The seeded demo products are not in Zoho: a full run deactivated them.
    assert (
        env.value("SELECT count(*) FROM products WHERE is_active AND zoho_item_id <> ALL($1)", fake_ids(env))
        == 0
    )
    names = {
        c["name"] for c in api.get("/api/consumer/categories", params={"page_size": 200}).json()["items"]
    }
    assert {"Home", "Kitchen", "Tools"} <= names
    lists = env.fetch("SELECT code, zoho_pricebook_id FROM price_lists WHERE zoho_pricebook_id IS NOT NULL")
    assert len(lists) == 2


@pytest.mark.usefixtures("first_run")
def test_change_in_zoho_served_after_incremental_run(api: httpx.Client, env: SyncEnv) -> None:
    item_id = fake_ids(env)[7]
    env.fake.catalog.update_item(item_id, name="Sync Test Kettle", rate=123.45, stock=0)
    started = time.monotonic()
    result = env.run()
    assert result.counts.items_changed == 1 and result.counts.prices_changed == 1
    assert _wait(lambda: _served(api, env, item_id)["name"] == "Sync Test Kettle", 2.0)
    print(f"\nchange in Zoho -> served: {(time.monotonic() - started) * 1000:.0f} ms (run included)")
    body = _served(api, env, item_id)
    assert body["price"] in ("123.45", 123.45) and body["in_stock"] is False


def _image_ids(env: SyncEnv) -> tuple[list[str], list[str]]:
    with env.fake.catalog.lock:
        items = env.fake.catalog.items.values()
        return [i["item_id"] for i in items if i["image_id"]], [
            i["item_id"] for i in items if not i["image_id"]
        ]


@pytest.mark.usefixtures("first_run")
def test_images_follow_zoho(api: httpx.Client, env: SyncEnv) -> None:
    uploads = env.db.uploads
    with_image, without = _image_ids(env)
    assert with_image and without
    for item_id in with_image:
        data = (uploads / f"{item_id}.jpg").read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "JPEG" and not img.getexif()
    assert not any((uploads / f"{i}.jpg").exists() for i in without)
    first = with_image[0]
    assert _wait(lambda: api.get(f"/product-images/{first}.jpg").status_code == 200)

    # Nothing changed: no image is fetched again.
    env.fake.clear_log()
    assert env.run().counts.images_fetched == 0
    assert env.image_calls() == 0

    # One image replaced, one removed, one added with bad bytes, one a decompression bomb.
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "PNG")
    env.fake.catalog.set_image(with_image[1], buf.getvalue())
    env.fake.catalog.set_image(with_image[2], None)
    env.fake.catalog.set_image(without[0], b"\xff\xd8\xff\xe0 not really a jpeg")
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 MP in about 20 KB
    env.fake.catalog.set_image(without[1], bomb.getvalue())
    env.fake.clear_log()
    result = env.run()
    assert result.status == "succeeded"
    assert env.image_calls() == 3  # the replaced and the two bad ones; a removal needs no call
    c = result.counts
    assert (c.images_fetched, c.images_removed, c.images_failed) == (1, 1, 2)
    with Image.open(uploads / f"{with_image[1]}.jpg") as img:
        assert img.getpixel((10, 10)) == pytest.approx((1, 2, 3), abs=3)
    assert not (uploads / f"{with_image[2]}.jpg").exists()
    assert not (uploads / f"{without[0]}.jpg").exists() and not (uploads / f"{without[1]}.jpg").exists()
    assert not [p for p in uploads.iterdir() if p.name.startswith(".")]  # no temp file left
    states = dict(
        env.fetch(
            "SELECT zoho_item_id, image_state FROM sync_items WHERE zoho_item_id = ANY($1)", without[:2]
        )
    )
    assert states == {without[0]: "rejected", without[1]: "rejected"}
    # Rejected images are not fetched again until Zoho's image changes.
    env.fake.clear_log()
    env.run()
    assert env.image_calls() == 0


@pytest.mark.usefixtures("first_run")
def test_images_beyond_the_per_run_cap_wait_oldest_first(env: SyncEnv) -> None:
    _, without = _image_ids(env)
    targets = without[2:7]
    for item_id in targets:  # one at a time: each change is newer than the one before
        env.fake.catalog.set_image(item_id, _png(len(item_id)))
    result = env.run(ZOHO_SYNC_IMAGES_PER_RUN=2)
    assert (result.counts.images_fetched, result.counts.images_deferred) == (2, 3)
    present = [(env.db.uploads / f"{i}.jpg").exists() for i in targets]
    assert present == [True, True, False, False, False]
    result = env.run(ZOHO_SYNC_IMAGES_PER_RUN=10)
    assert (result.counts.images_fetched, result.counts.images_deferred) == (3, 0)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (seed % 256, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.usefixtures("first_run")
def test_image_over_the_size_cap_is_refused_unread(env: SyncEnv) -> None:
    _, without = _image_ids(env)
    item_id = without[10]
    noise = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noise, "PNG")  # ~12 KB, incompressible
    env.fake.catalog.set_image(item_id, noise.getvalue())
    result = env.run(IMAGE_MAX_BYTES=4096)
    assert (result.counts.images_fetched, result.counts.images_failed) == (0, 1)
    assert not (env.db.uploads / f"{item_id}.jpg").exists()
    assert env.value("SELECT image_state FROM sync_items WHERE zoho_item_id = $1", item_id) == "rejected"
