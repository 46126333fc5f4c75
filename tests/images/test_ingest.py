"""server/images/ingest.py in process: what is accepted, what is refused, and how files are written."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from admin_testlib import camera_exif, image_bytes
from PIL import Image

from server.images.ingest import (
    ImageTooLarge,
    InvalidImage,
    UnsupportedImage,
    encode_clean_jpeg,
    ingest_image,
    remove_image,
    sniff,
)

MB = 1024 * 1024


def test_sniff_reads_magic_bytes_only() -> None:
    assert sniff(image_bytes("JPEG")) == "JPEG"
    assert sniff(image_bytes("PNG")) == "PNG"
    assert sniff(image_bytes("WEBP")) == "WEBP"
    assert sniff(image_bytes("GIF")) is None
    assert sniff(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert sniff(b"") is None


def test_clean_jpeg_has_no_metadata_and_keeps_orientation() -> None:
    data = image_bytes("JPEG", (64, 48), exif=camera_exif(), icc_profile=b"\x00" * 128, comment=b"secret")
    out = encode_clean_jpeg(data)
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (48, 64)
    assert not img.getexif() and "icc_profile" not in img.info and "comment" not in img.info
    assert b"PhoneMaker" not in out and b"secret" not in out


def test_transparency_goes_on_white() -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out = Image.open(io.BytesIO(encode_clean_jpeg(buf.getvalue())))
    assert min(out.getpixel((4, 4))) > 245  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        image_bytes("JPEG")[:200],
        b"\xff\xd8\xff\xe0" + b"\x00" * 500,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 50,
    ],
    ids=["truncated-jpeg", "zero-jpeg", "zero-png", "zero-webp"],
)
def test_undecodable_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        encode_clean_jpeg(data)


def test_bombs_are_refused_before_decoding() -> None:
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG", optimize=True)  # 400 MP in a few KB
    with pytest.raises(InvalidImage):
        encode_clean_jpeg(buf.getvalue())
    with pytest.raises(InvalidImage, match="too many pixels"):
        encode_clean_jpeg(image_bytes("PNG", (300, 200)), max_pixels=50_000)


def test_ingest_writes_atomically_and_refuses_without_a_trace(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    path = ingest_image(image_bytes("PNG"), folder, "item-1", MB)
    assert path == folder / "item-1.jpg" and sniff(path.read_bytes()) == "JPEG"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    for data, error in (
        (image_bytes("GIF"), UnsupportedImage),
        (b"\xff\xd8\xff" + b"\x01" * 100, InvalidImage),
        (image_bytes("JPEG") + b"\x00" * MB, ImageTooLarge),
    ):
        with pytest.raises(error):
            ingest_image(data, folder, "item-2", MB)
    assert sorted(os.listdir(folder)) == ["item-1.jpg"]
    with pytest.raises(ValueError, match="zoho_item_id"):
        ingest_image(image_bytes("PNG"), folder, "../escape", MB)


def test_a_symlink_is_replaced_never_written_through(tmp_path: Path) -> None:
    folder, outside = tmp_path / "uploads", tmp_path / "outside.jpg"
    folder.mkdir()
    outside.write_bytes(b"not yours")
    (folder / "item.jpg").symlink_to(outside)
    ingest_image(image_bytes("JPEG"), folder, "item", MB)
    assert outside.read_bytes() == b"not yours"
    assert not (folder / "item.jpg").is_symlink()
    (folder / "other.jpg").symlink_to(outside)
    assert remove_image(folder, "other") is True
    assert outside.exists() and not os.path.lexists(folder / "other.jpg")
    assert remove_image(folder, "other") is False
    assert remove_image(folder, "item") is True and os.listdir(folder) == []
