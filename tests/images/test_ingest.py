"""Image ingestion (server/images/ingest.py): what is accepted and refused, and how the file is written."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from server.images.ingest import MAX_SIDE, ImageRejected, encode_jpeg, ingest_image, remove_image, sniff

MB = 1024 * 1024


def _encoded(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB", **kw: object) -> bytes:
    buf = io.BytesIO()
    colour: object = {"RGBA": (200, 10, 10, 128), "RGB": (200, 10, 10)}.get(mode, 0)
    Image.new(mode, size, colour).save(buf, fmt, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_become_clean_jpegs(tmp_path: Path, fmt: str) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    data = _encoded(fmt, exif=exif.tobytes()) if fmt != "PNG" else _encoded(fmt)
    path = ingest_image(data, tmp_path, "item-1", 10 * MB)
    assert path == tmp_path / "item-1.jpg"
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.size == (40, 30)
        assert not img.getexif() and "icc_profile" not in img.info
    assert [p.name for p in tmp_path.iterdir()] == ["item-1.jpg"]  # no temporary file left


def test_orientation_applied_alpha_flattened_and_large_pictures_scaled(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    out = encode_jpeg(_encoded("JPEG", (40, 30), exif=exif.tobytes()), 10 * MB)
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (30, 40)
    out = encode_jpeg(_encoded("PNG", mode="RGBA"), 10 * MB)
    with Image.open(io.BytesIO(out)) as img:
        assert img.mode == "RGB"
    out = encode_jpeg(_encoded("PNG", (MAX_SIDE * 2, 100)), 10 * MB)
    with Image.open(io.BytesIO(out)) as img:
        assert max(img.size) == MAX_SIDE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GIF89a" + b"\0" * 100, "unsupported_type"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported_type"),
        (b"", "unsupported_type"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 200, "corrupt"),
        (_encoded("PNG")[:60], "corrupt"),  # truncated
        (_encoded("JPEG", (500, 500))[:-400], "corrupt"),
        (_encoded("PNG", (8000, 6000), mode="1"), "too_many_pixels"),  # 48 MP in a few KB
        (_encoded("PNG", (20000, 20000), mode="1"), "too_many_pixels"),  # past Pillow's own bomb limit
    ],
)
def test_refused(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as info:
        ingest_image(data, tmp_path, "x", 10 * MB)
    assert info.value.reason == reason
    assert list(tmp_path.iterdir()) == []


def test_size_cap(tmp_path: Path) -> None:
    data = _encoded("PNG", (200, 200))
    with pytest.raises(ImageRejected) as info:
        ingest_image(data, tmp_path, "x", len(data) - 1)
    assert info.value.reason == "too_large"
    assert ingest_image(data, tmp_path, "x", len(data)).exists()


def test_symlinks_are_replaced_never_followed(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep me")
    (folder / "a.jpg").symlink_to(outside)
    ingest_image(_encoded("PNG"), folder, "a", 10 * MB)
    assert not (folder / "a.jpg").is_symlink() and sniff((folder / "a.jpg").read_bytes()) == "JPEG"
    assert outside.read_bytes() == b"keep me"
    (folder / "b.jpg").symlink_to(outside)
    assert remove_image(folder, "b") is True
    assert outside.exists() and not os.path.lexists(folder / "b.jpg")
    assert remove_image(folder, "b") is False
    assert remove_image(tmp_path / "missing", "b") is False


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 65, "a.jpg", "ä"])
def test_names_are_strict(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="zoho_item_id"):
        ingest_image(_encoded("PNG"), tmp_path, bad, 10 * MB)
    with pytest.raises(ValueError, match="zoho_item_id"):
        remove_image(tmp_path, bad)
