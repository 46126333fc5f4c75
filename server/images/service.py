"""Product image files: only active products' images, only files really inside the uploads folder.

A name is served when (1) it is `{zoho_item_id}.jpg` with a strict id, (2) the ImageIndex says that active
product has an image (no file-system access: random or inactive names cost a dict lookup), and (3) the file
actually opened is a regular file inside the folder's real path and at most IMAGE_MAX_BYTES long.

Check (3) runs on the opened descriptor, not on the path, so a symlink swapped in between the check and the
read cannot redirect it (no TOCTOU): see `opened_inside`. Served files stay in a byte-bounded LRU and are
re-validated with one `fstat` at most once per IMAGE_REFRESH_INTERVAL_S; concurrent misses for one name
share one read (single flight), so a process holds at most one copy of a file however many clients ask.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from server.errors import NotFound
from server.settings import Settings

log = logging.getLogger("server.images")

NAME_RE = re.compile(r"([A-Za-z0-9_-]{1,64})\.jpg")
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY  # a FIFO must not block a thread
_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_REMEMBERED = 1024  # refused files whose identity we remember (warn once, no I/O per request)


class ImageLookup(Protocol):
    """What the store asks the ImageIndex: does this active product have an image?"""

    def has_item(self, zoho_item_id: str) -> bool:
        """True when the product is in the active catalog and its file counts as an image."""
        ...


Identity = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): changes when the file changes


@dataclass(slots=True)
class ImageFile:
    """One image's bytes and HTTP validators."""

    body: bytes
    etag: str
    last_modified: str
    identity: Identity
    checked_at: float


@dataclass(slots=True)
class _Refused:
    """A file that exists but is too large: remembered so it is neither re-read nor re-logged."""

    identity: Identity
    checked_at: float


def _not_found() -> NotFound:
    return NotFound("No such image.", "لا توجد صورة بهذا الاسم.")


def opened_inside(fd: int, path: str, real_folder: str) -> bool:
    """Whether the open file `fd` (opened from `path`) is a file under `real_folder` (a resolved path).

    Linux: the kernel's name of the open file (/proc/self/fd) is compared, so nothing that happens to the
    path after `open` matters. Elsewhere: `walked_inside`.
    """
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(os.path.join(real_folder, ""))
    except OSError:
        return walked_inside(fd, path, real_folder)


def walked_inside(fd: int, path: str, real_folder: str) -> bool:
    """`opened_inside` without /proc: walk the resolved path from the folder, following no link.

    Each step opens one component relative to the previous folder with O_NOFOLLOW, and the last one must
    be the very inode `fd` has open; whatever is renamed during the walk, success proves that inode is
    linked inside the folder.
    """
    prefix = os.path.join(real_folder, "")
    real = os.path.realpath(path)
    if not real.startswith(prefix):
        return False
    parts = real[len(prefix) :].split("/")
    opened = os.fstat(fd)
    try:
        dir_fd = os.open(real_folder, _DIR_NOFOLLOW)
    except OSError:
        return False
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        found = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    finally:
        os.close(dir_fd)
    return (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino)


def _read_exact(fd: int, size: int) -> bytes:
    # One read into one bytes object: no chunk list to join, so the file is never held twice.
    body = os.read(fd, size)
    if len(body) < size and body:
        rest = [body]
        got = len(body)
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                break
            rest.append(chunk)
            got += len(chunk)
        body = b"".join(rest)
    return body


class ImageStore:
    """Serves active products' `{zoho_item_id}.jpg` from the uploads folder, with an LRU bounded in bytes."""

    def __init__(
        self,
        folder: Path,
        index: ImageLookup,
        *,
        recheck_s: float,
        max_file_bytes: int,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.folder = folder
        self.index = index
        self.recheck_s = recheck_s
        self.max_file_bytes = max_file_bytes
        self.cache_bytes = cache_bytes
        self._entries: OrderedDict[str, ImageFile] = OrderedDict()
        self._bytes = 0
        self._loading: dict[str, asyncio.Future[ImageFile | None]] = {}
        self._refused: OrderedDict[str, _Refused] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_settings(cls, settings: Settings, index: ImageLookup) -> ImageStore:
        """The store for this process, reading the settings once."""
        return cls(
            settings.UPLOADS_DIR,
            index,
            recheck_s=settings.IMAGE_REFRESH_INTERVAL_S,
            max_file_bytes=settings.IMAGE_MAX_BYTES,
        )

    async def get(self, name: str) -> ImageFile:
        """The file for a public name like `123.jpg`; NotFound for anything that must not be served."""
        match = NAME_RE.fullmatch(name)
        if match is None:
            raise _not_found()
        if not self.index.has_item(match[1]):
            self._drop(name)  # deactivated or removed: free its bytes now
            raise _not_found()
        entry = self._entries.get(name)
        now = time.monotonic()
        if entry is not None and now - entry.checked_at < self.recheck_s:
            self._entries.move_to_end(name)
            self.hits += 1
            return entry
        refused = self._refused.get(name)
        if refused is not None and now - refused.checked_at < self.recheck_s:
            raise _not_found()
        self.misses += 1
        loading = self._loading.get(name)
        if loading is None:
            loading = asyncio.ensure_future(self._fill(name, entry))
            self._loading[name] = loading
        # shield: a client that goes away must not cancel the read the others are waiting for.
        fresh = await asyncio.shield(loading)
        if fresh is None:
            raise _not_found()
        return fresh

    async def _fill(self, name: str, cached: ImageFile | None) -> ImageFile | None:
        try:
            found = await asyncio.to_thread(self._load, name, cached)
        finally:
            del self._loading[name]
        if isinstance(found, _Refused):
            self._drop(name)
            self._remember_refused(name, found)
            return None
        self._refused.pop(name, None)
        if found is None:
            self._drop(name)
        elif found is not cached:
            self._drop(name)
            if len(found.body) <= self.cache_bytes // 4:
                self._entries[name] = found
                self._bytes += len(found.body)
                while self._bytes > self.cache_bytes:
                    _, old = self._entries.popitem(last=False)
                    self._bytes -= len(old.body)
        return found

    def _remember_refused(self, name: str, refused: _Refused) -> None:
        before = self._refused.pop(name, None)
        if before is None or before.identity != refused.identity:
            log.warning(
                "image %s not served: %d bytes is over IMAGE_MAX_BYTES=%d",
                name,
                refused.identity[2],
                self.max_file_bytes,
            )
        self._refused[name] = refused
        if len(self._refused) > _MAX_REMEMBERED:
            self._refused.popitem(last=False)

    def _drop(self, name: str) -> None:
        old = self._entries.pop(name, None)
        if old is not None:
            self._bytes -= len(old.body)

    def _load(self, name: str, cached: ImageFile | None) -> ImageFile | _Refused | None:
        # The name matched NAME_RE (no separators, no dots but the suffix), so it names an entry of the
        # folder; that entry may be a symlink, which `opened_inside` judges by what was really opened.
        path = os.path.join(self.folder, name)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            if not opened_inside(fd, path, os.path.realpath(self.folder)):
                return None
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if cached is not None and cached.identity == identity:
                cached.checked_at = time.monotonic()
                return cached
            if st.st_size > self.max_file_bytes:
                return _Refused(identity, time.monotonic())
            body = _read_exact(fd, st.st_size)
        except OSError:
            return None
        finally:
            os.close(fd)
        etag = f'"{st.st_ino:x}-{len(body):x}-{st.st_mtime_ns:x}"'
        return ImageFile(body, etag, formatdate(st.st_mtime, usegmt=True), identity, time.monotonic())
