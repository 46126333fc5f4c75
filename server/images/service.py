"""Product image files: strict names, no path outside the uploads folder, cached bytes with validators.

A served file is kept in a byte-bounded LRU and re-validated with one `stat` at most once per
IMAGE_REFRESH_INTERVAL_S, so a hot image costs no system call; reads happen off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from server.errors import NotFound

NAME_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.jpg")


@dataclass(slots=True)
class ImageFile:
    """One image's bytes and HTTP validators."""

    body: bytes
    etag: str
    last_modified: str
    identity: tuple[int, int, int]  # (inode, size, mtime_ns): changes when the file changes
    checked_at: float


class ImageStore:
    """Reads `{zoho_item_id}.jpg` from the uploads folder, with an LRU bounded in bytes."""

    def __init__(self, folder: Path, *, recheck_s: float, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.folder = folder
        self.recheck_s = recheck_s
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ImageFile] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    async def get(self, name: str) -> ImageFile:
        """The file for a public name like `123.jpg`; NotFound for bad names and missing files."""
        if NAME_RE.fullmatch(name) is None:
            raise NotFound("No such image.", "لا توجد صورة بهذا الاسم.")
        entry = self._entries.get(name)
        now = time.monotonic()
        if entry is not None and now - entry.checked_at < self.recheck_s:
            self._entries.move_to_end(name)
            self.hits += 1
            return entry
        self.misses += 1
        fresh = await asyncio.to_thread(self._load, name, entry)
        if fresh is None:
            self._drop(name)
            raise NotFound("No such image.", "لا توجد صورة بهذا الاسم.")
        if fresh is not entry:
            self._drop(name)
            if len(fresh.body) <= self.max_bytes // 4:
                self._entries[name] = fresh
                self._bytes += len(fresh.body)
                while self._bytes > self.max_bytes:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= len(old.body)
        return fresh

    def _drop(self, name: str) -> None:
        old = self._entries.pop(name, None)
        if old is not None:
            self._bytes -= len(old.body)

    def _load(self, name: str, cached: ImageFile | None) -> ImageFile | None:
        # The name matched NAME_RE (no separators, no dots but the suffix), so the path stays in the folder.
        path = os.path.join(self.folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if st.st_mode & 61440 != 32768:  # a regular file (after following a symlink)
                return None
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            if cached is not None and cached.identity == identity:
                cached.checked_at = time.monotonic()
                return cached
            chunks, remaining = [], st.st_size
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        body = b"".join(chunks)
        etag = f'"{st.st_ino:x}-{len(body):x}-{st.st_mtime_ns:x}"'
        return ImageFile(body, etag, formatdate(st.st_mtime, usegmt=True), identity, time.monotonic())
