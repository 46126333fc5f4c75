"""Name ranks of the in-memory list index (server/catalog/live.py) that take new names without a reload.

The index sorts by (name rank, id), so ranks need only order the active products' names exactly as SQL's
ORDER BY name does (equal names, equal ranks). A full load spreads the dense ranks of the distinct names over
[0, 2**61] (repo.NAME_RANKS), which leaves room between neighbours: a catch-up that brings new, renamed or
reactivated products gives each the rank of an equal name among the other active products, or places it
between the ranks of the names around it (their neighbours read in the catch-up's snapshot by one query on
the name index). When a gap is too narrow, the names around it are spread anew in memory (a local
relabel, of active and inactive products alike: the smallest window of ranks around the gap, growing
fourfold, whose names then stand at least RELABEL_SPACING apart), so the order of every name stays as it was
and no rank is read from SQL. Only when too many names change at once, or a window would hold more than
RELABEL_MAX names, are all the ranks loaded again.

A run of new names that fall into one gap takes its middle half (one name: the middle), so the gaps left on
either side are at least a quarter of it: names arriving in either order cost the gap 1-2 bits each time,
of the ~46 a full load leaves at 30,000 products (a sync reads items by modification time, in no name
order; a batch of 200 names in name order into one gap costs 2 bits plus the run's own spacing). Batches
that keep landing in the same gap (the fake Zoho's names arrive in descending order within a prefix) used
to exhaust it every ~20 batches, and each time every process loaded every rank again (a dense_rank() over
all products, ~60,000 rows decoded: six times per 50,000-item import); a relabel touches the names in one
window instead.

Inactive products keep whatever rank they had (they are never listed): one that becomes active again is
placed like a new one.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import asyncpg

from server.catalog import repo

log = logging.getLogger("server.catalog.ranks")
# Ranks stay inside int64 (the index's type); a full load leaves [-2**62, 0) and (2**61, 2**62) free.
LOW, HIGH = -(1 << 62), 1 << 62
# More names than this to place in one catch-up: one full load is cheaper than the neighbour look-ups.
PLACE_MAX = 5000
# A relabel spreads the names of its window this far apart at least (2**40: ~20 more runs into one gap at
# 2 bits each), unless the window is the whole range; at most RELABEL_MAX names in a window (beyond: a full
# load, which costs no more), and at most RELABELS_MAX relabels in one catch-up.
RELABEL_SPACING = 1 << 40
RELABEL_MAX = 100_000
RELABELS_MAX = 16

Relabel = Callable[[int, int, int], bool]


class RankIndex(Protocol):
    """What a relabel needs of core_ext.CatalogIndex."""

    def ranked_count(self, low: int, high: int) -> int: ...

    def respread_name_ranks(
        self, low: int, high: int, after: int, free: int
    ) -> tuple[list[int], list[int]]: ...


class Narrow(NamedTuple):
    """A gap with no room for `names` names between ranks `lo` and `hi` (what a relabel must widen)."""

    lo: int
    hi: int
    names: int


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
    rows: Sequence[Sequence[int | bool | None]],
    ranks: array[int],
    listed: Callable[[int], bool],
    relabel: Relabel | None = None,
) -> tuple[list[int], list[int]] | None:
    """(ids, ranks) of the products to place from repo.NAME_NEIGHBOURS' rows (in name order: id, same name as
    the row before, id below, id of an equal name, id above); None when only a full load can do it (a gap
    too narrow that `relabel` (a LiveCatalog's) could not widen, or a neighbour the index does not list).
    `relabel(lo, hi, count)` spreads the names around a narrow gap anew (updating `ranks`); True when done."""
    groups: list[_Group] = []
    for pid, same, below, equal, above in rows:
        if same and groups:
            groups[-1].ids.append(int(pid))  # type: ignore[arg-type]
        else:
            groups.append(_Group(int(pid), below, equal, above))  # type: ignore[arg-type]
    for _ in range(RELABELS_MAX + 1):
        placed = _place(groups, ranks, listed)
        if not isinstance(placed, Narrow):
            return placed
        if relabel is None or not relabel(*placed):
            log.info(
                "name ranks: no room for %d names between %d and %d; loading every rank",
                placed.names,
                placed.lo,
                placed.hi,
            )
            return None
    return None


def _place(
    groups: list[_Group], ranks: array[int], listed: Callable[[int], bool]
) -> tuple[list[int], list[int]] | Narrow | None:
    """One pass of assign over the groups, with the ranks as they are now."""
    placing = {pid for g in groups for pid in g.ids}
    for g in groups:
        g.rank = None
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
        if lo is None or hi is None or lo >= hi:
            # A neighbour not listed, or ranks out of SQL's order: only a full load knows.
            log.info("name ranks: neighbours of %d names at %s and %s; loading every rank", end - k, lo, hi)
            return None
        placed = spread(lo, hi, end - k)
        if placed is None:
            return Narrow(lo, hi, end - k)
        for g, rank in zip(groups[k:end], placed, strict=True):
            g.rank = rank
        k = end
    ids = [pid for g in groups for pid in g.ids]
    out = [g.rank for g in groups for _ in g.ids]
    return ids, out  # type: ignore[return-value]


def widen(index: RankIndex, lo: int, hi: int, count: int) -> tuple[list[int], list[int]] | None:
    """Widen the gap (lo, hi) for `count` names: the products of the smallest window [a, b] around it
    (growing fourfold) whose names then stand at least RELABEL_SPACING apart (or of the whole range) take
    ranks spread evenly strictly inside it, in the order they have, equal ranks kept equal, with `count`
    free slots where the gap was (CatalogIndex.respread_name_ranks: in the index itself, whose name order
    does not move). Returns their (ids, new ranks); None: the window would hold more than RELABEL_MAX."""
    reach = max(hi - lo, 1 << 20)
    while True:
        a, b = max(LOW, lo - reach), min(HIGH, hi + reach)
        held = index.ranked_count(a, b)
        if held > RELABEL_MAX:
            return None
        if (b - a) // (held + count + 1) >= RELABEL_SPACING or (a == LOW and b == HIGH):
            break
        reach *= 4
    try:
        return index.respread_name_ranks(a, b, lo, count)
    except ValueError:  # no room even over the whole range: cannot happen within int64 at RELABEL_MAX
        return None


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
    conn: asyncpg.Connection,
    ids: list[int],
    ranks: array[int],
    listed: Callable[[int], bool],
    relabel: Relabel | None = None,
) -> tuple[list[int], list[int]] | None:
    """Ranks for these products (new, renamed or reactivated; those inactive in the snapshot are left out)
    between their neighbours', read in the caller's snapshot; None: load every rank instead."""
    if len(ids) > PLACE_MAX:
        return None
    return assign(await repo.name_neighbours(conn, ids), ranks, listed, relabel)
