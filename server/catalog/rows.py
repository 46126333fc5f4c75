"""Serialized rows kept in memory: a list item or a detail body per product, each valid for one row state.

A cold page then costs no database round trip when its products were shown before: the index picks the
ids, this store gives their bytes, `core_ext.join_items` writes the page. An entry carries a tag, the
product's row version (LiveCatalog) and its image flag: the bytes are served only while both are the same,
so no write can leave a stale entry behind (a stock change moves the row version, an image added or removed
flips the flag). Category names and the price list are in the bytes too: LiveCatalog starts new stores
when either changes (a rebuild, or a change to a category that existed: new categories alone change no
row), so no tag needs to hold them.

Bounded in bytes: two generations (a write goes to the young one; when it is full it becomes the old one,
and the old one is dropped). A hit in the old generation moves to the young one, so what is shown stays and
what is not leaves within two turns, at no per-hit bookkeeping beyond a dict look-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from core_ext import serialize_items
from server.catalog import repo

# Per entry beyond its bytes: the dict slot, the tuple, the int tag and the bytes header (CPython 3.11).
ENTRY_OVERHEAD = 160


def tag_of(row_version: int, has_image: bool) -> int:
    """The tag an entry is valid for (row versions are non-negative)."""
    return row_version * 2 + has_image


class RowStore:
    """Bytes by product id, each valid for one tag; at most about `max_bytes` in all."""

    __slots__ = ("_half", "_old", "_size", "_young", "hits", "misses")

    def __init__(self, max_bytes: int) -> None:
        self._half = max_bytes // 2
        self._young: dict[int, tuple[int, bytes]] = {}
        self._old: dict[int, tuple[int, bytes]] = {}
        self._size = 0  # bytes (with overhead) in the young generation
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def holds(self, product_id: int) -> bool:
        """Whether some entry (at any tag) is kept for this product."""
        return product_id in self._young or product_id in self._old

    def get(self, product_id: int, tag: int) -> bytes | None:
        """The bytes kept for this product at this tag, or None."""
        entry = self._young.get(product_id)
        if entry is None:
            entry = self._old.pop(product_id, None)
            if entry is not None and entry[0] == tag:
                self._add(product_id, entry)
        if entry is None or entry[0] != tag:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def get_many(self, ids: Sequence[int], tags: Sequence[int]) -> list[bytes | None]:
        """get() of each id with its tag, in order."""
        young, get = self._young, self.get
        out: list[bytes | None] = []
        hits = 0
        for pid, tag in zip(ids, tags, strict=True):
            entry = young.get(pid)
            if entry is not None and entry[0] == tag:
                out.append(entry[1])
                hits += 1
            else:
                out.append(get(pid, tag))
        self.hits += hits
        return out

    def put(self, product_id: int, tag: int, data: bytes) -> None:
        """Keep `data` for this product at this tag (replacing what was kept for it)."""
        self._old.pop(product_id, None)
        self._add(product_id, (tag, data))

    def _add(self, product_id: int, entry: tuple[int, bytes]) -> None:
        cost = len(entry[1]) + ENTRY_OVERHEAD
        if cost > self._half:
            return  # larger than a generation: never kept
        if self._size + cost > self._half:
            self._old, self._young, self._size = self._young, {}, 0
        previous = self._young.get(product_id)
        if previous is not None:
            self._size -= len(previous[1]) + ENTRY_OVERHEAD
        self._young[product_id] = entry
        self._size += cost

    def report(self) -> dict[str, int]:
        """Counters for /ready."""
        return {"entries": len(self), "hits": self.hits, "misses": self.misses}


class _Flags:
    """has_many() answering from flags read once (serialize_items asks for the rows' ids in order)."""

    __slots__ = ("flags",)

    def __init__(self, flags: list[bool]) -> None:
        self.flags = flags

    def has_many(self, ids: Sequence[int]) -> list[bool]:
        return self.flags


async def fetch_items(
    conn: asyncpg.Connection, price_list: str, base_url: str, ids: Sequence[int], flags: Sequence[bool]
) -> list[bytes] | None:
    """The list items of these (distinct) products in the order of `ids`, each with its image flag, by
    primary key (one query); None when some no longer exist."""
    rows = await repo.page_by_ids(conn, price_list, list(ids))
    if len(rows) != len(ids):
        return None
    at = sorted(range(len(ids)), key=ids.__getitem__)  # the rows come by ascending id
    made = serialize_items(rows, _Flags([flags[k] for k in at]), base_url)
    out: list[bytes] = [b""] * len(ids)
    for k, item in zip(at, made, strict=True):
        out[k] = item
    return out
