"""Image ingestion: untrusted bytes in, a clean JPEG `{zoho_item_id}.jpg` written atomically in the folder.

Checks, in order of cost: size cap, magic bytes (JPEG, PNG, WebP), the header's pixel count (decompression
bombs are refused before any pixel is decoded), then a full decode with Pillow. What is written is a
re-encoded baseline JPEG: no EXIF, ICC or comments (EXIF orientation applied first), at most
`MAX_SIDE` pixels a side.

The write never goes through a path: the folder is opened once and every operation is relative to that
descriptor (a temporary file created exclusively with O_NOFOLLOW, written, fsynced, renamed over the final
name, then the folder fsynced). A rename replaces a symlink that sat at the final name rather than writing
through it, so nothing outside the folder is ever touched, and readers see the old file or the new one.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_PIXELS = 40_000_000  # 40 MP: any real product photo; a bomb declares far more
MAX_SIDE = 2048  # larger pictures are scaled down: shoppers' screens need no more, files stay small
JPEG_QUALITY = 85
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FORMATS = {"JPEG", "PNG", "WEBP"}


class ImageRejected(ValueError):
    """Bytes that are not an acceptable image; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sniff(data: bytes) -> str | None:
    """The format the magic bytes announce: JPEG, PNG, WEBP, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def encode_jpeg(data: bytes, max_bytes: int) -> bytes:
    """Validate `data` fully and return it re-encoded as a metadata-free JPEG; raises ImageRejected."""
    if len(data) > max_bytes:
        raise ImageRejected("too_large", f"image larger than {max_bytes} bytes")
    kind = sniff(data)
    if kind is None:
        raise ImageRejected("unsupported_type", "not a JPEG, PNG or WebP image")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past twice its limit raises) on huge images; ours is lower and checked below.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[kind]) as img:
                width, height = img.size
                if width < 1 or height < 1 or width * height > MAX_PIXELS:
                    raise ImageRejected("too_many_pixels", f"{width}x{height} exceeds {MAX_PIXELS} pixels")
                img.load()  # the full decode: truncated or corrupt data fails here
                clean = _flatten(ImageOps.exif_transpose(img))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("too_many_pixels", "decompression bomb") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt", f"image does not decode ({type(exc).__name__})") from None
    if max(clean.size) > MAX_SIDE:
        clean.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    clean.info = {}  # no EXIF, ICC profile or comment travels into the output
    out = io.BytesIO()
    clean.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _flatten(img: Image.Image) -> Image.Image:
    """RGB pixels; transparency composited on white (JPEG has no alpha)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _check_name(zoho_item_id: str) -> str:
    if not NAME_RE.match(zoho_item_id):
        raise ValueError("zoho_item_id must match [A-Za-z0-9_-]{1,64}")
    return f"{zoho_item_id}.jpg"


def write_atomic(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` as folder/name: temp file in the folder, fsync, rename, fsync the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    dir_fd = os.open(folder, _DIR_FLAGS)
    try:
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"  # a dot name: never mistaken for an image
        fd = os.open(tmp, _TMP_FLAGS, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(data)
                out.flush()
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return folder / name


def ingest_image(data: bytes, folder: Path, zoho_item_id: str, max_bytes: int) -> Path:
    """Validate, re-encode and atomically write a product image; returns its path. Raises ImageRejected."""
    name = _check_name(zoho_item_id)
    return write_atomic(folder, name, encode_jpeg(data, max_bytes))


def remove_image(folder: Path, zoho_item_id: str) -> bool:
    """Remove a product's image (a symlink itself, never its target); False when there was none."""
    name = _check_name(zoho_item_id)
    try:
        dir_fd = os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        return False
    try:
        os.unlink(name, dir_fd=dir_fd)
        os.fsync(dir_fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)
    return True
