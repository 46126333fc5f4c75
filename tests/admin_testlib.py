"""Helpers of the admin API tests: the admin-key CLI as a subprocess, auth headers, test images."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog_testlib import Database
from PIL import Image

KEY_RE = re.compile(r"cat_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
ROOT = Path(__file__).resolve().parent.parent


def admin_key_cli(db: Database, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m server admin-key ARGS` against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST"))}
    env["DATABASE_URL"] = db.url
    return subprocess.run(
        [sys.executable, "-m", "server", "admin-key", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_key(db: Database, name: str, scopes: str) -> str:
    """A new key with these scopes (the CLI's stdout)."""
    done = admin_key_cli(db, "create", "--name", name, "--scopes", scopes)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert KEY_RE.fullmatch(key), done.stdout
    return key


def bearer(key: str) -> dict[str, str]:
    """The Authorization header of a key."""
    return {"Authorization": f"Bearer {key}"}


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: Any) -> bytes:
    """A small image of `fmt` (JPEG, PNG, WEBP) with a gradient, saved with `save` options (exif=...)."""
    img = Image.new(mode, size)
    for x in range(size[0]):
        for y in range(size[1]):
            value = (x * 4 % 256, y * 5 % 256, (x + y) % 256, 128)
            img.putpixel((x, y), value[: len(mode)] if mode != "L" else value[0])
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def camera_exif() -> Image.Exif:
    """EXIF a phone would write: maker, model, a GPS block, and orientation 6 (rotate 90°)."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0110] = "Model X"
    exif[0x0112] = 6
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    return exif


def wait_for(check: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Seconds until check() was true; AssertionError after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(step)
    return time.monotonic() - started
