"""Pure-Python ``ImageIndex``: the twin of ``_images.pyx`` with the same API, results and fingerprints."""

from __future__ import annotations

import hashlib
import math
import operator
import os
import stat
import threading
import time
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

__all__ = ["MAX_DENSE_ID", "RACY_WINDOW_NS", "ImageIndex"]

# products.id is a PostgreSQL serial (int4); a larger id is a caller bug and would allocate a huge bitset.
MAX_DENSE_ID: Final = 2**31 - 1
# Coarsest directory mtime granularity we guard against (FAT/exFAT); see ImageIndex.refresh.
RACY_WINDOW_NS: Final = 2_000_000_000
_SUFFIX: Final = ".jpg"


class _Snapshot:
    """One immutable scan result, swapped in with a single assignment so readers never see a mix."""

    __slots__ = ("bits", "count", "fingerprint")

    def __init__(self, bits: bytes, count: int) -> None:
        self.bits = bits
        self.count = count
        self.fingerprint = _fingerprint(bits)


def _fingerprint(bits: bytes) -> str:
    # Trailing zero bytes are trimmed so the value depends on the set, not on the catalog's largest id.
    return hashlib.blake2b(bits.rstrip(b"\0"), digest_size=16).hexdigest()


class _Names:
    """The catalog: file-name bytes sorted in one arena (name k is ``arena[offsets[k]:offsets[k + 1]]``)
    and the dense id of each, looked up by binary search; a dict of 1M names held ~110 MB."""

    __slots__ = ("arena", "ids", "nbits", "offsets")

    def __init__(self, arena: bytes, offsets: array[int], ids: array[int]) -> None:
        self.arena = arena
        self.offsets = offsets
        self.ids = ids
        self.nbits = max(ids, default=-1) + 1

    @property
    def nbytes(self) -> int:
        return len(self.arena) + len(self.offsets) * self.offsets.itemsize + len(self.ids) * self.ids.itemsize

    def stem(self, k: int) -> bytes:
        """Name k."""
        return self.arena[self.offsets[k] : self.offsets[k + 1]]

    def find(self, name: bytes) -> int:
        """Dense id of ``name``, or -1."""
        arena, offsets = self.arena, self.offsets
        lo, hi = 0, len(self.ids)
        while lo < hi:
            mid = (lo + hi) >> 1
            here = arena[offsets[mid] : offsets[mid + 1]]
            if here < name:
                lo = mid + 1
            elif here > name:
                hi = mid
            else:
                return self.ids[mid]
        return -1


def _build_names(mapping: Mapping[str, int] | Iterable[tuple[str, int]]) -> _Names:
    stems: list[bytes] = []
    ids = array("i")
    pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
    for key, value in pairs:
        if not isinstance(key, str):
            raise TypeError(f"catalog key {key!r}: expected str, got {type(key).__name__}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"catalog[{key!r}]: expected int, got {type(value).__name__}")
        if value < 0 or value > MAX_DENSE_ID:
            raise ValueError(f"catalog[{key!r}] = {value}: dense id must be in 0..{MAX_DENSE_ID}")
        try:
            stem = os.fsencode(key)  # the file-name bytes, as the compiled build keeps them
        except UnicodeEncodeError:
            continue  # a name no file system can hold never matches a file
        stems.append(stem)
        ids.append(value)
    # A stable sort: of equal names the last one given wins, as in a dict built from the pairs.
    order = sorted(range(len(stems)), key=stems.__getitem__)
    kept = [k for at, k in enumerate(order) if at + 1 == len(order) or stems[order[at + 1]] != stems[k]]
    offsets = array("I", [0])
    for k in kept:
        offsets.append(offsets[-1] + len(stems[k]))
    return _Names(b"".join(stems[k] for k in kept), offsets, array("i", (ids[k] for k in kept)))


def _link_is_served(link: str, prefix: str) -> bool:
    """Whether a symlink resolves to a regular file inside the folder (``prefix`` = its real path + "/")."""
    real = os.path.realpath(link)
    if not real.startswith(prefix):
        return False
    try:
        return stat.S_ISREG(os.stat(real).st_mode)
    except OSError:
        return False  # dangling, a loop, or a component that is not a folder


def _served(base: bytes, stem: bytes, prefix: str) -> bool:
    """Whether the scan would count ``{stem}.jpg`` now: a regular file, or a link the image route serves."""
    if not stem or b"/" in stem or b"\0" in stem:
        return False  # no directory entry has this name (the scan never looks it up)
    path = base + stem + b".jpg"
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if stat.S_ISREG(mode):
        return True
    return stat.S_ISLNK(mode) and _link_is_served(os.fsdecode(path), prefix)


class ImageIndex:
    """Which products have an image, as a bitset over dense product ids, rebuilt from the uploads folder."""

    __slots__ = ("_folder", "_interval", "_last_check", "_lock", "_names", "_racy", "_scan_mtime", "_snap")

    def __init__(self, folder: str | os.PathLike[str], refresh_interval_s: float = 1.0) -> None:
        path = os.fspath(folder)
        if not isinstance(path, str):
            raise TypeError("folder must be a str path")
        interval = float(refresh_interval_s)
        if not (interval >= 0.0 and math.isfinite(interval)):
            raise ValueError(f"refresh_interval_s must be a finite number >= 0, got {refresh_interval_s!r}")
        self._folder = path
        self._interval = interval
        self._names = _build_names(())
        self._snap = _Snapshot(b"", 0)
        self._last_check: float | None = None
        self._scan_mtime: int | None = None
        self._racy = False
        # refresh() runs in a worker thread while the catalog changes on the event loop: without one lock a
        # scan over the old names could overwrite an update's snapshot (the compiled module holds the GIL).
        self._lock = threading.RLock()

    @property
    def folder(self) -> str:
        """The uploads folder scanned for ``{zoho_item_id}.jpg``."""
        return self._folder

    @property
    def refresh_interval_s(self) -> float:
        """Minimum seconds between two stats of the folder in ``refresh()``."""
        return self._interval

    @property
    def count(self) -> int:
        """Number of catalog products that have an image."""
        return self._snap.count

    @property
    def fingerprint(self) -> str:
        """Hex digest of the set of image-bearing dense ids; equal across processes seeing the same set."""
        return self._snap.fingerprint

    @property
    def nbytes(self) -> int:
        """Bytes used by the bitset."""
        return len(self._snap.bits)

    @property
    def catalog_nbytes(self) -> int:
        """Bytes used by the catalog's names and ids."""
        return self._names.nbytes

    def set_catalog(self, mapping: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
        """Replace the catalog (a ``{zoho_item_id: dense_id}`` mapping or an iterable of such pairs; of
        equal names the last wins) and rescan the folder now."""
        with self._lock:
            self._names = _build_names(mapping)
            self._last_check = time.monotonic()
            self._rescan(*self._probe())

    def update_catalog(
        self, upserts: Mapping[str, int] | Iterable[tuple[str, int]], remove_ids: Iterable[int] = ()
    ) -> None:
        """Change the catalog in place of a ``set_catalog`` of all of it: drop every name of the ids in
        ``remove_ids``, then add ``upserts`` (a mapping or pairs, as ``set_catalog`` takes; a name present
        takes its new id). Only the changed names' files are looked at (no rescan): the bits of the other
        ids stay as the last scan left them, and ``refresh()`` still rescans when the folder changes."""
        with self._lock:
            self._update_catalog(upserts, remove_ids)

    def _update_catalog(
        self, upserts: Mapping[str, int] | Iterable[tuple[str, int]], remove_ids: Iterable[int]
    ) -> None:
        added = _build_names(upserts)
        old = self._names
        drop: set[int] = set()
        for value in remove_ids:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"remove_ids: expected int, got {type(value).__name__}")
            drop.add(value)
        new_stems = {added.stem(k): added.ids[k] for k in range(len(added.ids))}
        touched = set(new_stems.values())
        kept: list[tuple[bytes, int]] = []
        for k, ident in enumerate(old.ids):
            stem = old.stem(k)
            if ident in drop or stem in new_stems:
                touched.add(ident)  # its image may go with it
            else:
                kept.append((stem, ident))
        kept.extend(new_stems.items())
        kept.sort()
        offsets = array("I", [0])
        for stem, _ in kept:
            offsets.append(offsets[-1] + len(stem))
        names = _Names(b"".join(stem for stem, _ in kept), offsets, array("i", (i for _, i in kept)))
        bits = bytearray(self._snap.bits[: (names.nbits + 7) >> 3].ljust((names.nbits + 7) >> 3, b"\0"))
        for ident in touched:
            if ident < len(bits) * 8:
                bits[ident >> 3] &= ~(1 << (ident & 7))
        prefix = os.path.join(os.path.realpath(self._folder), "")
        base = os.path.join(os.fsencode(self._folder), b"")
        for stem, ident in kept:
            if ident in touched and not bits[ident >> 3] >> (ident & 7) & 1 and _served(base, stem, prefix):
                bits[ident >> 3] |= 1 << (ident & 7)
        self._names = names
        self._snap = _Snapshot(bytes(bits), sum(bin(b).count("1") for b in bits))

    def has_item(self, zoho_item_id: str) -> bool:
        """Whether the catalog product with this ``zoho_item_id`` has an image; no file-system access."""
        if not isinstance(zoho_item_id, str):
            raise TypeError(f"zoho_item_id must be a str, got {type(zoho_item_id).__name__}")
        try:
            i = self._names.find(os.fsencode(zoho_item_id))
        except UnicodeEncodeError:
            return False
        bits = self._snap.bits
        return 0 <= i < len(bits) * 8 and bool(bits[i >> 3] >> (i & 7) & 1)

    def has(self, dense_id: int) -> bool:
        """Whether the product with this dense id has an image (False when unknown); no file-system access."""
        i = dense_id if type(dense_id) is int else operator.index(dense_id)
        bits = self._snap.bits
        return 0 <= i < len(bits) * 8 and bool(bits[i >> 3] >> (i & 7) & 1)

    def has_many(self, dense_ids: Sequence[int]) -> list[bool]:
        """``has()`` for each id, in order; no file-system access."""
        bits = self._snap.bits
        limit = len(bits) * 8
        out: list[bool] = []
        append = out.append
        for raw in dense_ids:
            i = raw if type(raw) is int else operator.index(raw)
            append(0 <= i < limit and bool(bits[i >> 3] >> (i & 7) & 1))
        return out

    def refresh(self, force: bool = False) -> bool:
        """Rescan if due and the folder changed; True only when a rescan ran and the image set changed."""
        with self._lock:
            return self._refresh(force)

    def _refresh(self, force: bool) -> bool:
        now = time.monotonic()
        if not force and self._last_check is not None and now - self._last_check < self._interval:
            return False
        self._last_check = now
        wall, mtime = self._probe()
        if not force and not self._racy and mtime == self._scan_mtime:
            return False
        return self._rescan(wall, mtime)

    def _probe(self) -> tuple[int, int | None]:
        # The wall clock is read before the stat: any later change to the folder gets an mtime after this
        # instant, unless the file system's timestamp tick is coarse, which is what the racy flag covers.
        wall = time.time_ns()
        try:
            return wall, os.stat(self._folder).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return wall, None

    def _rescan(self, wall: int, mtime: int | None) -> bool:
        names = self._names
        bits = bytearray((names.nbits + 7) >> 3)
        count = 0
        # A symlink counts only if the image route would serve it: resolved inside the real folder.
        prefix = os.path.join(os.path.realpath(self._folder), "")
        # Every link sits in the folder, so links with the same target text resolve alike within one scan.
        link_verdicts: dict[str, bool] = {}
        try:
            entries = os.scandir(self._folder)
        except (FileNotFoundError, NotADirectoryError):
            mtime = None
        else:
            with entries:
                for entry in entries:
                    name = entry.name
                    if len(name) <= 4 or not name.endswith(_SUFFIX):
                        continue
                    i = names.find(os.fsencode(name[:-4]))
                    if i < 0:
                        continue
                    if entry.is_symlink():
                        try:
                            text = os.readlink(entry.path)
                        except OSError:
                            continue  # removed since the scan listed it
                        verdict = link_verdicts.get(text)
                        if verdict is None:
                            verdict = link_verdicts[text] = _link_is_served(entry.path, prefix)
                        if not verdict:
                            continue
                    elif not entry.is_file(follow_symlinks=False):
                        continue
                    mask = 1 << (i & 7)
                    if not bits[i >> 3] & mask:
                        bits[i >> 3] |= mask
                        count += 1
        snap = _Snapshot(bytes(bits), count)
        changed = snap.fingerprint != self._snap.fingerprint
        self._snap = snap
        self._scan_mtime = mtime
        self._racy = mtime is not None and wall - mtime < RACY_WINDOW_NS
        return changed
