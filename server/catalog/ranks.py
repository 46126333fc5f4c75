"""Name ranks of the in-memory list index (server/catalog/live.py) that take new names without a reload.

The index sorts by (name rank, id), so ranks need only order the active products' names exactly as SQL's
ORDER BY name does (equal names, equal ranks). A full load gives each distinct name its dense rank times GAP
(repo.NAME_RANKS), which leaves room between neighbours: a catch-up that brings new, renamed or reactivated
products places each between the ranks of its neighbours in the name order among the other active products
(read in the catch-up's snapshot by one query on the name index), or on the rank of an equal name. Only
when a gap is too narrow, or too many names change at once, are all the ranks loaded again.

Inactive products keep whatever rank they had (they are never listed): one that becomes active again is
placed like a new one.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

import asyncpg

from server.catalog import repo

GAP = repo.NAME_RANK_GAP
# Ranks stay well inside int64 (the index's type): about 2**30 distinct names at GAP apart.
LOW, HIGH = -(1 << 62), 1 << 62
# More names than this to place in one catch-up: one full load is cheaper than the neighbour look-ups.
PLACE_MAX = 5000


def spread(lo: int | None, hi: int | None, count: int) -> list[int] | None:
    """`count` increasing ranks strictly between lo and hi (None: no neighbour on that side); None when the
    gap is too narrow."""
    if lo is None and hi is None:
        lo = 0
    if hi is None:
        assert lo is not None
        out = [lo + GAP * k for k in range(1, count + 1)]
    elif lo is None:
        out = [hi - GAP * k for k in range(count, 0, -1)]
    else:
        step = (hi - lo) // (count + 1)
        if step < 1:
            return None
        out = [lo + step * k for k in range(1, count + 1)]
    if out and (out[0] <= LOW or out[-1] >= HIGH):
        return None
    return out


def assign(
    rows: Sequence[Sequence[int | bool | None]], ranks: array[int], listed: Callable[[int], bool]
) -> tuple[list[int], list[int]] | None:
    """(ids, ranks) of the products to place from repo.NAME_NEIGHBOURS' rows (in name order: id, same name as
    the row before, id below, id of an equal name, id above); None when only a full load can do it (a gap
    too narrow, or a neighbour the index does not list: it would not be a neighbour there)."""
    ids: list[int] = []
    out: list[int] = []
    k = 0
    while k < len(rows):
        pid, same, below, equal, above = rows[k]
        assert isinstance(pid, int)
        if equal is not None or (same and out):
            if equal is not None:
                assert isinstance(equal, int)
                if not listed(equal):
                    return None
                rank = ranks[equal]
            else:
                rank = out[-1]
            ids.append(pid)
            out.append(rank)
            k += 1
            continue
        # A run of new names between the same two neighbours: spread them over the gap.
        end = k + 1
        while end < len(rows) and rows[end][3] is None and rows[end][2] == below and rows[end][4] == above:
            end += 1
        bounds: list[int | None] = []
        for n in (below, above):
            if n is None:
                bounds.append(None)
                continue
            assert isinstance(n, int)
            if not listed(n):
                return None
            bounds.append(ranks[n])
        lo, hi = bounds
        if lo is not None and hi is not None and lo >= hi:
            return None  # not this snapshot's order (never expected): reload
        distinct = 1 + sum(1 for r in rows[k + 1 : end] if not r[1])
        placed = spread(lo, hi, distinct)
        if placed is None:
            return None
        at = -1
        for r in rows[k:end]:
            at += 0 if (r[1] and at >= 0) else 1
            assert isinstance(r[0], int)
            ids.append(r[0])
            out.append(placed[at])
        k = end
    return ids, out


async def load(conn: asyncpg.Connection) -> tuple[array[int], array[int]]:
    """(ids, name ranks) of every product, streamed into arrays (inside a transaction)."""
    ids, ranks = array("q"), array("q")
    async for chunk in repo.name_rank_chunks(conn):
        ids.extend([r[0] for r in chunk])
        ranks.extend([r[1] for r in chunk])
    return ids, ranks


async def place(
    conn: asyncpg.Connection, ids: list[int], ranks: array[int], listed: Callable[[int], bool]
) -> tuple[list[int], list[int]] | None:
    """Ranks for these products (new, renamed or reactivated; those inactive in the snapshot are left out)
    between their neighbours', read in the caller's snapshot; None: load every rank instead."""
    if len(ids) > PLACE_MAX:
        return None
    return assign(await repo.name_neighbours(conn, ids), ranks, listed)
