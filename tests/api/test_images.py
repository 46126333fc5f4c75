"""Product images: bytes, validators, 304, HEAD, traversal, and the index following the folder."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import httpx
import pytest
from catalog_testlib import Database


def _first_with(api: httpx.Client, has_image: bool) -> dict[str, Any]:
    items = api.get("/api/consumer/products", params={"page_size": 200}).json()["items"]
    return next(i for i in items if i["has_image"] == has_image)


def test_image_bytes_and_validators(api: httpx.Client, database: Database) -> None:
    item = _first_with(api, True)
    resp = api.get(f"/product-images/{item['zoho_item_id']}.jpg")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.content == (database.uploads / f"{item['zoho_item_id']}.jpg").read_bytes()
    assert resp.content[:2] == b"\xff\xd8"
    assert "max-age=" in resp.headers["cache-control"]
    assert resp.headers["etag"].startswith('"') and resp.headers["last-modified"].endswith("GMT")
    assert "content-encoding" not in resp.headers
    again = api.get(resp.request.url, headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    listed = api.get(resp.request.url, headers={"If-None-Match": f'"nope", {resp.headers["etag"]}'})
    assert listed.status_code == 304
    assert api.get(resp.request.url, headers={"If-None-Match": "*"}).status_code == 304
    assert api.get(resp.request.url, headers={"If-None-Match": '"other"'}).status_code == 200
    since = api.get(resp.request.url, headers={"If-Modified-Since": resp.headers["last-modified"]})
    assert since.status_code == 304
    head = api.head(resp.request.url)
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == resp.headers["etag"]


def test_symlinked_image_is_served(api: httpx.Client, database: Database) -> None:
    links = [p for p in database.uploads.iterdir() if p.is_symlink() and p.exists()]
    assert links
    resp = api.get(f"/product-images/{links[0].name}")
    assert resp.status_code == 200 and resp.content == links[0].read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "../../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "%2e%2e%2fsecret.jpg",
        "x.jpg%00.png",
        "abc%00.jpg",
        "_library%2Fvariant-1.jpg",
        "..",
        ".jpg",
        "a b.jpg",
        "x.JPG",
        "x.jpeg",
        "x" * 65 + ".jpg",
        "%252e%252e%252f.jpg",
        "nonexistent.jpg",
    ],
)
def test_traversal_and_bad_names_are_404(api: httpx.Client, path: str) -> None:
    resp = api.get(f"/product-images/{path}")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "not_found"


def test_dangling_symlink_is_404_but_counts_as_image(api: httpx.Client, database: Database) -> None:
    item = _first_with(api, False)
    link = database.uploads / f"{item['zoho_item_id']}.jpg"
    os.symlink("/nonexistent/target.jpg", link)
    try:
        assert _wait_for_has_image(api, item["id"], True)
        assert api.get(f"/product-images/{link.name}").status_code == 404
    finally:
        link.unlink()
    assert _wait_for_has_image(api, item["id"], False)


def _wait_for_has_image(api: httpx.Client, product_id: int, expected: bool, timeout: float = 3.0) -> bool:
    # Each request may land on either process: require several consecutive agreeing answers.
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        got = api.get(f"/api/consumer/products/{product_id}").json()["has_image"]
        streak = streak + 1 if got == expected else 0
        if streak >= 6:
            return True
        time.sleep(0.05)
    return False


def test_added_and_removed_files_show_within_the_refresh_interval(
    api: httpx.Client, database: Database
) -> None:
    item = _first_with(api, False)
    source = next(p for p in database.uploads.iterdir() if p.suffix == ".jpg" and not p.is_symlink())
    target = database.uploads / f"{item['zoho_item_id']}.jpg"
    started = time.monotonic()
    shutil.copyfile(source, target)
    try:
        assert _wait_for_has_image(api, item["id"], True)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0  # IMAGE_REFRESH_INTERVAL_S is 0.2 in the suite
        listed = api.get("/api/consumer/products", params={"q": item["sku"]}).json()["items"][0]
        assert listed["has_image"] and listed["image_url"].endswith(target.name)
        assert api.get(f"/product-images/{target.name}").content == source.read_bytes()
    finally:
        target.unlink()
    assert _wait_for_has_image(api, item["id"], False)
    assert api.get(f"/product-images/{target.name}").status_code == 404
