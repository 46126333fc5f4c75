"""Image ingestion (admin uploads, the Zoho sync): validate, re-encode to a clean JPEG, write atomically.

Untrusted bytes go through, in order: a size cap, the magic bytes of JPEG/PNG/WebP (anything else is
refused before Pillow sees it), the pixel count from the header (a decompression bomb is refused before
it is decoded), then a full decode. What is written is a new JPEG made from the decoded pixels (EXIF
orientation applied, then every metadata block dropped: no EXIF/GPS, no ICC, no comments), so nothing of
the upload but its picture reaches shoppers. The file lands as `{zoho_item_id}.jpg` by rename from a
temporary file in the same folder after fsync, so readers (the ImageIndex, the image route) see the old
file or the new one, never a part; the folder is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# 40 megapixels (e.g. 8000 x 5000): above any product photo; a bomb declares far more.
DEFAULT_MAX_PIXELS = 40_000_000
JPEG_QUALITY = 85
MAGIC: tuple[tuple[bytes, int, str], ...] = (  # (bytes, offset, Pillow format)
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"WEBP", 8, "WEBP"),  # after b"RIFF" + 4 length bytes
)
MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")


class ImageRejected(ValueError):
    """Base of the reasons an image is refused; `en`/`ar` say why."""

    def __init__(self, en: str, ar: str) -> None:
        super().__init__(en)
        self.en, self.ar = en, ar


class ImageTooLarge(ImageRejected):
    """More bytes than allowed."""


class UnsupportedImage(ImageRejected):
    """Not a JPEG, PNG or WebP by its magic bytes."""


class InvalidImage(ImageRejected):
    """Claims a supported type but does not decode, or has too many pixels."""


def sniff(data: bytes) -> str | None:
    """The Pillow format named by the magic bytes (JPEG, PNG, WEBP), or None."""
    for magic, offset, fmt in MAGIC:
        if data[offset : offset + len(magic)] == magic and (fmt != "WEBP" or data[:4] == b"RIFF"):
            return fmt
    return None


def encode_clean_jpeg(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Decode an upload fully and return it as a metadata-free JPEG; ImageRejected subclasses on failure."""
    fmt = sniff(data)
    if fmt is None:
        raise UnsupportedImage(
            "The image must be JPEG, PNG or WebP.", "يجب أن تكون الصورة JPEG أو PNG أو WebP."
        )
    try:
        # Pillow's open() refuses more than twice its global MAX_IMAGE_PIXELS (DecompressionBombError) and
        # warns above it; our own limit, checked before the decode, is exact, per call and lower.
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            width, height = img.size
            if width < 1 or height < 1 or width * height > max_pixels:
                raise InvalidImage(
                    f"The image has too many pixels ({width}x{height}; at most {max_pixels}).",
                    f"عدد بكسلات الصورة كبير جداً ({width}x{height}؛ الحد {max_pixels}).",
                )
            img.load()  # the full decode: truncated or corrupt data fails here
            picture = _to_rgb(ImageOps.exif_transpose(img))
            # The encoder falls back on the image's own info for some blocks (the JPEG comment): empty it,
            # and ask for no EXIF or ICC profile.
            picture.info = {}
            out = io.BytesIO()
            picture.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True, exif=b"", icc_profile=None)
            return out.getvalue()
    except ImageRejected:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        MemoryError,
    ) as exc:
        raise InvalidImage(
            f"The image could not be decoded ({type(exc).__name__}).", "تعذّر فك ترميز الصورة."
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    # Transparency goes onto white (a product photo's usual background); JPEG has no alpha.
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def _check_id(zoho_item_id: str) -> None:
    if not ID_RE.fullmatch(zoho_item_id):
        raise ValueError(f"not a valid zoho_item_id: {zoho_item_id[:80]!r}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ingest_image(
    data: bytes, folder: Path, zoho_item_id: str, max_bytes: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Path:
    """Validate `data` (size, magic, pixels, full decode), re-encode it as a clean JPEG and write it
    atomically as `folder/{zoho_item_id}.jpg`; the path. Raises ImageTooLarge, UnsupportedImage or
    InvalidImage (nothing is written then), ValueError for a bad id."""
    _check_id(zoho_item_id)
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"The image is larger than {max_bytes} bytes.", f"حجم الصورة أكبر من {max_bytes} بايت."
        )
    jpeg = encode_clean_jpeg(data, max_pixels=max_pixels)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{zoho_item_id}.jpg"
    # The temporary name is never `<id>.jpg`, so the image index cannot count a half-written file.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{zoho_item_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(jpeg)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)  # replaces a symlink itself, never what it points to
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    return final


def remove_image(folder: Path, zoho_item_id: str) -> bool:
    """Remove `folder/{zoho_item_id}.jpg` (a file or a symlink, never what a link points to); whether one
    was there."""
    _check_id(zoho_item_id)
    try:
        os.unlink(folder / f"{zoho_item_id}.jpg")
    except FileNotFoundError:
        return False
    _fsync_dir(folder)
    return True
