"""Name ranks of the in-memory list index (server/catalog/live.py) that take new names without a reload.

The index sorts by (name rank, id), so ranks need only order the active products' names exactly as SQL's
ORDER BY name does (equal names, equal ranks). A full load spreads the dense ranks of the distinct names over
[0, 2**61] (repo.NAME_RANKS), which leaves room between neighbours: a catch-up that brings new, renamed or
reactivated products gives each the rank of an equal name among the other active products, or places it
between the ranks of the names around it (their neighbours read in the catch-up's snapshot by one query on
the name index). Only when a gap is too narrow, or too many names change at once, are all the ranks loaded
again.

A run of new names that fall into one gap takes its middle half (one name: the middle), so the gaps left on
either side are at least a quarter of it: names arriving in either order cost the gap 1-2 bits each time,
of the ~46 a full load leaves at 30,000 products (a sync reads items by modification time, in no name
order; a batch of 200 names in name order into one gap costs 2 bits plus the run's own spacing).

Inactive products keep whatever rank they had (they are never listed): one that becomes active again is
placed like a new one.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Sequence

import asyncpg

from server.catalog import repo

log = logging.getLogger("server.catalog.ranks")
# Ranks stay inside int64 (the index's type); a full load leaves [-2**62, 0) and (2**61, 2**62) free.
LOW, HIGH = -(1 << 62), 1 << 62
# More names than this to place in one catch-up: one full load is cheaper than the neighbour look-ups.
PLACE_MAX = 5000


def spread(lo: int, hi: int, count: int) -> list[int] | None:
    """`count` increasing ranks strictly between lo and hi, in the middle half of the gap (or, when that is
    too narrow, over all of it); None when the gap has no room for them."""
    width = hi - lo
    step = (width // 2) // (count + 1)
    start = lo + width // 4
    if step < 1:
        step, start = width // (count + 1), lo
        if step < 1:
            return None
    return [start + step * k for k in range(1, count + 1)]


class _Group:
    """Products to place that share one name, and that name's neighbours (repo.NAME_NEIGHBOURS)."""

    __slots__ = ("above", "below", "equal", "ids", "rank")

    def __init__(self, pid: int, below: int | None, equal: int | None, above: int | None) -> None:
        self.ids = [pid]
        self.below, self.equal, self.above = below, equal, above
        self.rank: int | None = None


def assign(
    rows: Sequence[Sequence[int | bool | None]], ranks: array[int], listed: Callable[[int], bool]
) -> tuple[list[int], list[int]] | None:
    """(ids, ranks) of the products to place from repo.NAME_NEIGHBOURS' rows (in name order: id, same name as
    the row before, id below, id of an equal name, id above); None when only a full load can do it (a gap
    too narrow, or a neighbour the index does not list)."""
    groups: list[_Group] = []
    for pid, same, below, equal, above in rows:
        if same and groups:
            groups[-1].ids.append(int(pid))  # type: ignore[arg-type]
        else:
            groups.append(_Group(int(pid), below, equal, above))  # type: ignore[arg-type]
    placing = {pid for g in groups for pid in g.ids}
    for g in groups:
        if g.equal is not None:
            if not listed(g.equal):
                log.info("name ranks: product %d (an equal name) is not listed; loading every rank", g.equal)
                return None
            g.rank = ranks[g.equal]
    k = 0
    while k < len(groups):
        if groups[k].rank is not None:
            k += 1
            continue
        # A run of new names with nothing else between them: the groups k..end-1.
        end = k + 1
        while end < len(groups) and groups[end].rank is None and groups[end].below in groups[end - 1].ids:
            end += 1
        lo = _bound(groups[k].below, groups[k - 1] if k else None, placing, ranks, listed, LOW)
        hi = _bound(
            groups[end - 1].above, groups[end] if end < len(groups) else None, placing, ranks, listed, HIGH
        )
        placed = None if lo is None or hi is None or lo >= hi else spread(lo, hi, end - k)
        if placed is None:
            log.info(
                "name ranks: no room for %d names between %s and %s (neighbours %s, %s); loading every rank",
                end - k,
                lo,
                hi,
                groups[k].below,
                groups[end - 1].above,
            )
            return None
        for g, rank in zip(groups[k:end], placed, strict=True):
            g.rank = rank
        k = end
    ids = [pid for g in groups for pid in g.ids]
    out = [g.rank for g in groups for _ in g.ids]
    return ids, out  # type: ignore[return-value]


def _bound(
    neighbour: int | None,
    group: _Group | None,
    placing: set[int],
    ranks: array[int],
    listed: Callable[[int], bool],
    none: int,
) -> int | None:
    """The rank a run stops at: that of the neighbouring name (`none` when there is none), which is either a
    product not being placed (its rank is right) or the adjacent group, whose rank is known; None: reload."""
    if neighbour is None:
        return none
    if neighbour in placing:
        return group.rank if group is not None and neighbour in group.ids else None
    return ranks[neighbour] if listed(neighbour) else None


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
