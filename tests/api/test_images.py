"""Product images: bytes, validators, 304, HEAD, ranges, traversal, links out of the folder, inactive
products, and the index following the folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_testlib import Database, run

_HANDED_OUT: set[int] = set()  # products a test already changed: each test takes fresh ones


def _first_with(api: httpx.Client, has_image: bool) -> dict[str, Any]:
    return _fresh(api, has_image, 1)[0]


def _fresh(api: httpx.Client, has_image: bool, n: int) -> list[dict[str, Any]]:
    items = api.get("/api/consumer/products", params={"page_size": 200}).json()["items"]
    found = [i for i in items if i["has_image"] == has_image and i["id"] not in _HANDED_OUT][:n]
    assert len(found) == n
    _HANDED_OUT.update(i["id"] for i in found)
    return found


def _jpeg_file(database: Database) -> Path:
    return next(p for p in sorted(database.uploads.iterdir()) if p.suffix == ".jpg" and not p.is_symlink())


def _statuses(api: httpx.Client, url: str, n: int = 6) -> set[int]:
    # Several requests: each may land on either server process.
    return {api.get(url).status_code for _ in range(n)}


def _wait_for_status(api: httpx.Client, url: str, expected: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if api.get(url).status_code == expected else 0
        if streak >= 6:
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _rescanned(api: httpx.Client, database: Database) -> Iterator[None]:
    """Add an image for a fresh product and wait until every process shows it: both indexes rescanned."""
    witness = _fresh(api, False, 1)[0]
    path = database.uploads / f"{witness['zoho_item_id']}.jpg"
    shutil.copyfile(_jpeg_file(database), path)
    try:
        assert _wait_for_has_image(api, witness["id"], True)
        yield
    finally:
        path.unlink()


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


def test_dangling_symlink_is_404_and_not_an_image(api: httpx.Client, database: Database) -> None:
    item = _fresh(api, False, 1)[0]
    link = database.uploads / f"{item['zoho_item_id']}.jpg"
    os.symlink("/nonexistent/target.jpg", link)
    try:
        with _rescanned(api, database):
            assert api.get(f"/api/consumer/products/{item['id']}").json()["has_image"] is False
            assert api.get(f"/product-images/{link.name}").status_code == 404
    finally:
        link.unlink()


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


@pytest.mark.parametrize("where", ["absolute", "relative", "etc-passwd"])
def test_symlink_out_of_the_folder_is_404_and_not_an_image(
    api: httpx.Client, database: Database, where: str
) -> None:
    item = _fresh(api, False, 1)[0]
    secret = database.uploads.parent / f"secret-{where}.jpg"
    shutil.copyfile(_jpeg_file(database), secret)  # readable, a real JPEG: only its place is wrong
    target = {"absolute": str(secret), "relative": f"../{secret.name}", "etc-passwd": "/etc/passwd"}[where]
    link = database.uploads / f"{item['zoho_item_id']}.jpg"
    os.symlink(target, link)
    try:
        with _rescanned(api, database):
            assert api.get(f"/api/consumer/products/{item['id']}").json()["has_image"] is False
            for _ in range(6):
                resp = api.get(f"/product-images/{link.name}")
                assert resp.status_code == 404
                assert resp.headers["content-type"] == "application/problem+json"
                assert resp.json()["code"] == "not_found"
    finally:
        link.unlink()
        secret.unlink()


def test_symlink_inside_the_folder_is_served_and_an_image(api: httpx.Client, database: Database) -> None:
    item = _fresh(api, False, 1)[0]
    library = next(p for p in (database.uploads / "_library").iterdir() if p.suffix == ".jpg")
    link = database.uploads / f"{item['zoho_item_id']}.jpg"
    link.symlink_to(Path("_library") / library.name)
    try:
        assert _wait_for_has_image(api, item["id"], True)
        resp = api.get(f"/product-images/{link.name}")
        assert resp.status_code == 200 and resp.content == library.read_bytes()
    finally:
        link.unlink()


def test_file_swapped_for_a_link_out_is_404_at_once(api: httpx.Client, database: Database) -> None:
    # The index may still count the name (it rescans once per interval); the open-time check must not.
    item = _fresh(api, False, 1)[0]
    path = database.uploads / f"{item['zoho_item_id']}.jpg"
    shutil.copyfile(_jpeg_file(database), path)
    secret = database.uploads.parent / "swapped-secret.jpg"
    secret.write_bytes(b"\xff\xd8 secret bytes")
    try:
        assert _wait_for_has_image(api, item["id"], True)
        assert api.get(f"/product-images/{path.name}").status_code == 200  # cached in both processes
        staged = database.uploads / "staged-link"
        staged.symlink_to(secret)
        os.replace(staged, path)  # atomic: the name is never missing
        time.sleep(0.3)  # past IMAGE_REFRESH_INTERVAL_S, the cached copy is re-validated
        for _ in range(8):
            resp = api.get(f"/product-images/{path.name}")
            assert resp.status_code == 404 and b"secret" not in resp.content
    finally:
        path.unlink()
        secret.unlink()


def test_image_of_an_inactive_product_is_404(api: httpx.Client, database: Database) -> None:
    item = next(
        i for i in _fresh(api, True, 5) if not (database.uploads / f"{i['zoho_item_id']}.jpg").is_symlink()
    )
    url = f"/product-images/{item['zoho_item_id']}.jpg"
    assert api.get(url).status_code == 200
    run(database.execute("UPDATE products SET is_active = false WHERE id = $1", item["id"]))
    try:
        assert _wait_for_status(api, url, 404)
        assert api.get(url).json()["code"] == "not_found"
    finally:
        run(database.execute("UPDATE products SET is_active = true WHERE id = $1", item["id"]))
    assert _wait_for_status(api, url, 200)


@pytest.mark.parametrize("stem", ["not-a-product", "ZZZ999999", "_library"])
def test_image_file_of_no_product_is_404(api: httpx.Client, database: Database, stem: str) -> None:
    path = database.uploads / f"{stem}.jpg"
    shutil.copyfile(_jpeg_file(database), path)
    try:
        time.sleep(0.3)  # a rescan would not make it servable either
        assert _statuses(api, f"/product-images/{path.name}") == {404}
    finally:
        path.unlink()


def test_cache_busting_query_is_ignored(api: httpx.Client, database: Database) -> None:
    item = _first_with(api, True)
    url = f"/product-images/{item['zoho_item_id']}.jpg"
    plain = api.get(url)
    for query in ({"v": "2"}, {"v": ["1", "2"], "t": "1700000000"}, {"page": "-1", "%zz": "x"}):
        resp = api.get(url, params=query)
        assert resp.status_code == 200, query
        assert resp.content == plain.content and resp.headers["etag"] == plain.headers["etag"]
    again = api.get(url, params={"v": "3"}, headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304


_IMAGE: dict[str, str] = {}  # the url the range tests share (one product, left untouched)


@pytest.fixture
def image(api: httpx.Client) -> tuple[str, bytes, str]:
    """(url, bytes, etag) of one served image."""
    if not _IMAGE:
        _IMAGE["url"] = f"/product-images/{_first_with(api, True)['zoho_item_id']}.jpg"
    resp = api.get(_IMAGE["url"])
    assert resp.status_code == 200 and len(resp.content) > 300
    return _IMAGE["url"], resp.content, resp.headers["etag"]


@pytest.mark.parametrize(
    ("spec", "cut"),
    [
        ("bytes=0-99", slice(0, 100)),
        ("bytes=-100", slice(-100, None)),
        ("bytes=100-", slice(100, None)),
        ("bytes=10-10", slice(10, 11)),
        ("bytes=200-99999999999", slice(200, None)),
        ("bytes=0-99999999999999999999999", slice(0, None)),
        ("bytes=-99999999", slice(0, None)),
        ("Bytes = 5-9", slice(5, 10)),
    ],
)
def test_single_range_is_206(api: httpx.Client, image: tuple[str, bytes, str], spec: str, cut: slice) -> None:
    url, body, etag = image
    resp = api.get(url, headers={"Range": spec})
    assert resp.status_code == 206
    assert resp.content == body[cut]
    first = range(len(body))[cut][0]
    last = first + len(body[cut]) - 1
    assert resp.headers["content-range"] == f"bytes {first}-{last}/{len(body)}"
    assert resp.headers["content-length"] == str(len(body[cut]))
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["etag"] == etag and resp.headers["last-modified"].endswith("GMT")
    assert resp.headers["accept-ranges"] == "bytes"
    assert "max-age=" in resp.headers["cache-control"]
    head = api.head(url, headers={"Range": spec})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-range"] == resp.headers["content-range"]


@pytest.mark.parametrize(
    "spec", ["bytes={n}-", "bytes={n}-{n}", "bytes=-0", "bytes=99999999999999999999999-"]
)
def test_unsatisfiable_range_is_416(api: httpx.Client, image: tuple[str, bytes, str], spec: str) -> None:
    url, body, _ = image
    resp = api.get(url, headers={"Range": spec.format(n=len(body))})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{len(body)}"
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "spec",
    ["bytes=0-9,20-29", "bytes=9-0", "bytes=abc", "items=0-9", "bytes=", "bytes=-", "bytes=1-2-3", "0-9"],
)
def test_several_or_invalid_ranges_get_the_whole_file(
    api: httpx.Client, image: tuple[str, bytes, str], spec: str
) -> None:
    url, body, etag = image
    resp = api.get(url, headers={"Range": spec})
    assert resp.status_code == 200 and resp.content == body and resp.headers["etag"] == etag
    assert "content-range" not in resp.headers


def test_if_range(api: httpx.Client, image: tuple[str, bytes, str]) -> None:
    url, body, etag = image
    last_modified = api.get(url).headers["last-modified"]
    for validator in (etag, last_modified):
        resp = api.get(url, headers={"Range": "bytes=0-9", "If-Range": validator})
        assert resp.status_code == 206 and resp.content == body[:10]
    unreadable = ("garbage", "Mon, 01 Jan 2024 00:00:00 +99999999999999999999", "Mon, 01 Jan 2024 00:00:00")
    for stale in ('"other"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT", *unreadable):
        resp = api.get(url, headers={"Range": "bytes=0-9", "If-Range": stale})
        assert resp.status_code == 200 and resp.content == body, stale


def test_not_modified_wins_over_range(api: httpx.Client, image: tuple[str, bytes, str]) -> None:
    url, _, etag = image
    last_modified = api.get(url).headers["last-modified"]
    resp = api.get(url, headers={"Range": "bytes=0-9", "If-None-Match": etag})
    assert resp.status_code == 304 and resp.content == b""
    resp = api.get(url, headers={"Range": "bytes=0-9", "If-Modified-Since": last_modified})
    assert resp.status_code == 304 and resp.content == b""
    resp = api.get(url, headers={"Range": "bytes=0-9", "If-None-Match": '"other"'})
    assert resp.status_code == 206
    for unreadable in ("Mon, 01 Jan 2024 00:00:00 +99999999999999999999", "Mon, 01 Jan 2024 00:00:00", "x"):
        resp = api.get(url, headers={"Range": "bytes=0-9", "If-Modified-Since": unreadable})
        assert resp.status_code == 206, unreadable


def test_head_reports_the_real_length(api: httpx.Client, image: tuple[str, bytes, str]) -> None:
    url, body, etag = image
    head = api.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag and head.headers["accept-ranges"] == "bytes"
    ranged = api.head(url, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.headers["content-range"] == f"bytes 0-9/{len(body)}"
    assert (head.headers["content-length"], ranged.headers["content-length"]) == (str(len(body)), "10")


def test_target_changed_behind_an_inside_link_is_judged_when_opened(
    api: httpx.Client, database: Database
) -> None:
    # A change inside a sub-folder leaves the uploads folder's mtime alone, so the index keeps counting
    # the link; the open-time checks must still refuse a FIFO (which would block a reader forever) and a
    # target swapped for a link out of the folder.
    item = _fresh(api, False, 1)[0]
    sub = database.uploads / "_swap"
    sub.mkdir()
    target = sub / "a.jpg"
    shutil.copyfile(_jpeg_file(database), target)
    link = database.uploads / f"{item['zoho_item_id']}.jpg"
    link.symlink_to(Path("_swap") / "a.jpg")
    url = f"/product-images/{link.name}"
    secret = database.uploads.parent / "behind-link-secret.jpg"
    secret.write_bytes(b"\xff\xd8 secret bytes")
    try:
        assert _wait_for_has_image(api, item["id"], True)
        assert _statuses(api, url) == {200}
        time.sleep(2.2)  # past the index's racy window: it stops rescanning an unchanged folder
        os.mkfifo(sub / "staged")
        os.replace(sub / "staged", target)
        time.sleep(0.3)  # past IMAGE_REFRESH_INTERVAL_S: cached copies are re-validated
        for _ in range(6):
            assert api.get(url, timeout=5).status_code == 404
        (sub / "staged").symlink_to(secret)
        os.replace(sub / "staged", target)
        time.sleep(0.3)
        for _ in range(6):
            resp = api.get(url, timeout=5)
            assert resp.status_code == 404 and b"secret" not in resp.content
    finally:
        link.unlink()
        shutil.rmtree(sub)
        secret.unlink()
