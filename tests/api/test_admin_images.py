"""Admin image upload and removal over HTTP: JPEG/PNG/WebP stored as clean JPEGs, served by the image route
and flagged `has_image` after the index's refresh; wrong types 415, undecodable data and bombs 422, oversized
413, with no file left behind; DELETE removes the file; every write audited."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from admin_testlib import bearer, camera_exif, create_key, image_bytes, wait_for
from catalog_testlib import Database, ServerProcess, Services, run
from PIL import Image

ADMIN = "/api/admin/products"
PUBLIC = "/api/consumer/products"
MAX_IMAGE = 600_000


@pytest.fixture(scope="module")
def server(
    database: Database, services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Small limits: JSON bodies 64 KB, images 600 KB and 4 megapixels."""
    proc = ServerProcess(
        database,
        services,
        tmp_path_factory.mktemp("srv"),
        MAX_BODY_BYTES="65536",
        IMAGE_MAX_BYTES=str(MAX_IMAGE),
        IMAGE_MAX_PIXELS="4000000",
        IMAGE_REFRESH_INTERVAL_S="0.1",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def key(database: Database) -> str:
    """A catalog:write key."""
    return create_key(database, "images", "catalog:write")


def products(db: Database, uploads: Path, *, with_image: bool, n: int = 1) -> list[tuple[int, str]]:
    """(id, zoho_item_id) of active products that have (or lack) an image file."""
    rows = run(db.fetch("SELECT id, zoho_item_id FROM products WHERE is_active ORDER BY id"))
    found = [
        (r["id"], r["zoho_item_id"])
        for r in rows
        if (uploads / f"{r['zoho_item_id']}.jpg").exists() == with_image
    ]
    return found[:n]


def listing(uploads: Path) -> set[str]:
    return set(os.listdir(uploads))


def put(api: httpx.Client, key: str, pid: int, data: bytes, content_type: str) -> httpx.Response:
    return api.put(
        f"{ADMIN}/{pid}/image", content=data, headers={**bearer(key), "Content-Type": content_type}
    )


def served_jpeg(api: httpx.Client, item: str, size: tuple[int, int]) -> Image.Image:
    """The served picture once it has `size`, checked clean. Each request opens a new connection and may
    reach another process, one that has not rescanned the folder yet (404, or the old file meanwhile):
    poll for up to 10 s rather than trust that an earlier answer came from every process."""
    found: list[httpx.Response] = []

    def served() -> bool:
        resp = api.get(f"/product-images/{item}.jpg", headers={"Connection": "close"})
        if resp.status_code == 404:
            return False
        assert resp.status_code == 200, resp.text
        found[:] = [resp]
        return Image.open(io.BytesIO(resp.content)).size == size

    wait_for(served, 10.0)
    (resp,) = found
    assert resp.headers["content-type"] == "image/jpeg"
    assert b"Exif" not in resp.content[:4096] and b"PhoneMaker" not in resp.content
    assert b"private note" not in resp.content
    img = Image.open(io.BytesIO(resp.content))
    assert img.format == "JPEG" and not img.getexif() and {"icc_profile", "comment"}.isdisjoint(img.info)
    return img


def has_image(api: httpx.Client, pid: int) -> bool | None:
    """True or False when every process says so (answers over fresh connections), else None."""
    seen = set()
    for _ in range(6):
        resp = api.get(f"{PUBLIC}/{pid}", headers={"Connection": "close"})
        assert resp.status_code == 200, resp.text
        seen.add(bool(resp.json()["has_image"]))
    return seen.pop() if len(seen) == 1 else None


def test_upload_jpeg_with_exif_is_cleaned_served_and_flagged(
    api: httpx.Client, database: Database, key: str
) -> None:
    ((pid, item),) = products(database, database.uploads, with_image=False)
    assert has_image(api, pid) is False
    data = image_bytes("JPEG", (64, 48), exif=camera_exif(), comment=b"private note")
    assert b"PhoneMaker" in data and b"private note" in data
    resp = put(api, key, pid, data, "image/jpeg")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["has_image"] is True and doc["image_path"] == f"/product-images/{item}.jpg"
    assert resp.headers["cache-control"] == "no-store" and "etag" not in resp.headers
    stored = database.uploads / f"{item}.jpg"
    assert stored.is_file() and not stored.is_symlink() and doc["size_bytes"] == stored.stat().st_size
    assert not [n for n in listing(database.uploads) if n.endswith(".tmp")]
    wait_for(lambda: has_image(api, pid) is True, 10.0)
    served_jpeg(api, item, (48, 64))  # EXIF orientation 6 applied before the metadata was dropped
    (row,) = run(database.fetch("SELECT * FROM audit_log WHERE target = $1", f"product:{pid}"))
    assert row["action"] == "product.image.put"
    assert orjson.loads(row["before"]) == {"has_image": False}
    assert orjson.loads(row["after"])["has_image"] is True


@pytest.mark.parametrize(
    ("fmt", "media", "mode"), [("PNG", "image/png", "RGBA"), ("WEBP", "image/webp", "RGB")]
)
def test_png_and_webp_become_jpeg(
    api: httpx.Client, database: Database, key: str, fmt: str, media: str, mode: str
) -> None:
    ((pid, item),) = products(database, database.uploads, with_image=True)
    before = (database.uploads / f"{item}.jpg").read_bytes()
    resp = put(api, key, pid, image_bytes(fmt, (40, 30), mode), media)
    assert resp.status_code == 200, resp.text
    assert (database.uploads / f"{item}.jpg").read_bytes() != before
    served_jpeg(api, item, (40, 30))


def test_an_upload_replaces_a_hard_link_not_its_other_names(
    api: httpx.Client, database: Database, key: str
) -> None:
    # The demo seed shares one file between products by hard links (and symlinks): a write through the
    # link would change every product sharing it.
    uploads = database.uploads
    ((_, other),) = products(database, uploads, with_image=True, n=5)[-1:]
    ((pid, item),) = products(database, uploads, with_image=False, n=3)[-1:]
    os.link(uploads / f"{other}.jpg", uploads / f"{item}.jpg")
    other_bytes = (uploads / f"{other}.jpg").read_bytes()
    assert put(api, key, pid, image_bytes("PNG", (20, 20)), "image/png").status_code == 200
    assert (uploads / f"{other}.jpg").read_bytes() == other_bytes
    assert (uploads / f"{item}.jpg").read_bytes() != other_bytes


def bomb_png() -> bytes:
    """A 20000 x 20000 one-bit PNG: 400 megapixels in a few dozen KB."""
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def test_bad_images_are_refused_and_leave_no_file(api: httpx.Client, database: Database, key: str) -> None:
    ((pid, _),) = products(database, database.uploads, with_image=False)
    before = listing(database.uploads)
    jpeg = image_bytes("JPEG", (64, 48))
    cases = [
        (b"GIF89a" + b"\x00" * 100, "image/jpeg", 415, "unsupported_media_type"),  # magic is not JPEG
        (image_bytes("GIF", (10, 10)), "image/gif", 415, "unsupported_media_type"),
        (jpeg, "text/plain", 415, "unsupported_media_type"),
        (jpeg, "application/octet-stream", 415, "unsupported_media_type"),
        (os.urandom(5000), "image/png", 415, "unsupported_media_type"),
        (jpeg[: len(jpeg) // 2], "image/jpeg", 422, "validation_failed"),  # truncated
        (b"\xff\xd8\xff\xe0" + os.urandom(3000), "image/jpeg", 422, "validation_failed"),  # garbage
        (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "image/png", 422, "validation_failed"),
        (bomb_png(), "image/png", 422, "validation_failed"),
        (image_bytes("PNG", (2500, 2000), "L", optimize=True), "image/png", 422, "validation_failed"),  # 5 MP
        (b"", "image/jpeg", 422, "validation_failed"),
    ]
    for data, media, status, code in cases:
        resp = put(api, key, pid, data, media)
        assert resp.status_code == status, (media, data[:12], resp.text)
        assert resp.json()["code"] == code and resp.headers["content-type"] == "application/problem+json"
        if status == 422:
            assert [e["field"] for e in resp.json()["errors"]] == ["body"]
    assert listing(database.uploads) == before
    assert (
        run(database.fetch("SELECT count(*) FROM audit_log WHERE target = $1", f"product:{pid}"))[0][0] == 0
    )


def test_size_limits_are_the_image_ones(api: httpx.Client, database: Database, key: str) -> None:
    ((pid, _),) = products(database, database.uploads, with_image=False, n=2)[1:]
    noisy = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    data = buf.getvalue()
    assert 65536 < len(data) < MAX_IMAGE  # over MAX_BODY_BYTES, within IMAGE_MAX_BYTES
    assert put(api, key, pid, data, "image/png").status_code == 200
    too_big = put(api, key, pid, data + os.urandom(MAX_IMAGE), "image/png")
    assert too_big.status_code == 413 and too_big.json()["code"] == "payload_too_large"
    # A JSON route keeps MAX_BODY_BYTES.
    json_big = api.patch(
        f"{ADMIN}/{pid}",
        content=b'{"description":"' + b"x" * 70_000 + b'"}',
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert json_big.status_code == 413


def test_delete_removes_the_file(api: httpx.Client, database: Database, key: str) -> None:
    ((pid, item),) = products(database, database.uploads, with_image=True, n=40)[-1:]
    wait_for(lambda: has_image(api, pid) is True, 10.0)
    resp = api.delete(f"{ADMIN}/{pid}/image", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json()["removed"] is True and resp.json()["has_image"] is False
    assert not os.path.lexists(database.uploads / f"{item}.jpg")
    wait_for(lambda: has_image(api, pid) is False, 10.0)
    # Any process that has not rescanned yet may still serve the old bytes: poll over fresh connections.
    gone = f"/product-images/{item}.jpg"
    wait_for(lambda: api.get(gone, headers={"Connection": "close"}).status_code == 404, 10.0)
    again = api.delete(f"{ADMIN}/{pid}/image", headers=bearer(key))
    assert again.status_code == 200 and again.json()["removed"] is False
    actions = [
        r["action"]
        for r in run(database.fetch("SELECT action FROM audit_log WHERE target = $1", f"product:{pid}"))
    ]
    assert actions == ["product.image.delete", "product.image.delete"]


def test_uploads_need_the_scope(api: httpx.Client, database: Database) -> None:
    ((pid, _),) = products(database, database.uploads, with_image=False)
    other = create_key(database, "sync", "sync:run")
    data = image_bytes("JPEG")
    assert put(api, other, pid, data, "image/jpeg").status_code == 403
    assert (
        api.put(f"{ADMIN}/{pid}/image", content=data, headers={"Content-Type": "image/jpeg"}).status_code
        == 401
    )
    assert api.delete(f"{ADMIN}/{pid}/image", headers=bearer(other)).status_code == 403
