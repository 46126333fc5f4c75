"""server/catalog/ranks.py on its own: placed ranks keep the name order; a sync's batches in name order fit in
one gap; a gap that runs out is widened by a local relabel (ranks.widen over a real CatalogIndex); a window
too big, or a neighbour the index does not list, asks for a full load."""

from __future__ import annotations

from array import array

from core_ext import CatalogIndex
from server.catalog.ranks import HIGH, LOW, RELABEL_MAX, RELABEL_SPACING, assign, spread, widen

GAP = 2**61 // 30_001  # a full load of 30,000 products


def rows_of(
    batch: list[tuple[int, str]], names: dict[int, str]
) -> list[tuple[int, bool | None, int | None, None, int | None]]:
    """repo.NAME_NEIGHBOURS' rows for `batch` (id, name) inserted among `names` (all distinct here)."""
    everyone = sorted({**names, **dict(batch)}.items(), key=lambda p: (p[1], p[0]))
    at = {pid: k for k, (pid, _) in enumerate(everyone)}
    out = []
    for pid, _ in sorted(batch, key=lambda p: (p[1], p[0])):
        k = at[pid]
        below = everyone[k - 1][0] if k else None
        above = everyone[k + 1][0] if k + 1 < len(everyone) else None
        out.append((pid, None, below, None, above))
    return out


def test_batches_in_name_order_fit_in_one_gap() -> None:
    names = {1: "apple", 2: "banana"}
    ranks = array("q", [0, GAP, 2 * GAP])
    next_id = 3
    for batch_no in range(20):  # 20 batches of 200 names, each above the one before, into one gap
        batch = [(next_id + k, f"apricot {batch_no:03d} {k:03d}") for k in range(200)]
        next_id += 200
        placed = assign(rows_of(batch, names), ranks, lambda _pid: True)
        assert placed is not None, batch_no
        ranks.extend([0] * 200)
        for pid, rank in zip(*placed, strict=True):
            ranks[pid] = rank
        names.update(batch)
    order = sorted(names, key=lambda pid: names[pid])
    assert [ranks[pid] for pid in order] == sorted(ranks[pid] for pid in order)
    assert len({ranks[pid] for pid in order}) == len(order)


def test_one_name_at_a_time_in_either_order_fits() -> None:
    for descending in (False, True):
        names = {1: "apple", 2: "banana"}
        ranks = array("q", [0, GAP, 2 * GAP])
        for k in range(40):  # each new name next to the one before it
            pid = 3 + k
            name = f"apricot {(99 - k) if descending else k:02d}"
            placed = assign(rows_of([(pid, name)], names), ranks, lambda _pid: True)
            assert placed is not None, (descending, k)
            ranks.append(placed[1][0])
            names[pid] = name
        order = sorted(names, key=lambda pid: names[pid])
        assert [ranks[pid] for pid in order] == sorted(set(ranks[pid] for pid in order))


def test_equal_names_share_a_rank_and_runs_stop_at_them() -> None:
    ranks = array("q", [0, GAP, 2 * GAP, 3 * GAP] + [0] * 10)
    # Names: 1 "b", 2 "d", 3 "f" exist; 10 "a", 11 "b" (equal to 1), 12 "c", 13 "c" (same as 12), 14 "z".
    rows = [
        (10, None, None, None, 1),
        (11, False, 10, 1, 12),
        (12, False, 11, None, 2),
        (13, True, 11, None, 2),
        (14, False, 3, None, None),
    ]
    ids, out = assign(rows, ranks, lambda _pid: True) or ([], [])
    got = dict(zip(ids, out, strict=True))
    assert got[11] == ranks[1]
    assert got[12] == got[13]
    assert LOW < got[10] < ranks[1] < got[12] < ranks[2]
    assert ranks[3] < got[14] < HIGH


def test_no_room_or_an_unlisted_neighbour_asks_for_a_full_load() -> None:
    assert spread(10, 12, 1) == [11]
    assert spread(10, 12, 2) is None
    assert spread(10, 11, 1) is None
    ranks = array("q", [0, 5, 6, 0])
    assert assign([(3, None, 1, None, 2)], ranks, lambda _pid: True) is None  # no rank between 5 and 6
    ranks = array("q", [0, GAP, 2 * GAP, 0])
    assert assign([(3, None, 1, None, 2)], ranks, lambda pid: pid != 2) is None
    assert assign([(3, None, 1, 2, None)], ranks, lambda pid: pid != 2) is None
    assert assign([(3, None, 1, None, 2)], ranks, lambda _pid: True) is not None


class Ranked:
    """Names and their ranks in a real CatalogIndex, relabelled through ranks.widen as LiveCatalog does."""

    def __init__(self, names: dict[int, str], ranks: array[int]) -> None:
        self.names, self.ranks = names, ranks
        self.index = CatalogIndex()
        ids = sorted(names)
        n = len(ids)
        self.index.build(ids, [None] * n, [None] * n, [1] * n, [0] * n, [ranks[i] for i in ids], [True] * n)
        self.relabels = 0

    def relabel(self, lo: int, hi: int, count: int) -> bool:
        found = widen(self.index, lo, hi, count)
        if found is None:
            return False
        for pid, rank in zip(*found, strict=True):
            self.ranks[pid] = rank
        self.relabels += 1
        return True

    def add(self, batch: list[tuple[int, str]]) -> None:
        placed = assign(rows_of(batch, self.names), self.ranks, lambda _pid: True, self.relabel)
        assert placed is not None
        top = max(pid for pid, _ in batch)
        self.ranks.extend([0] * (top + 1 - len(self.ranks)))
        for pid, rank in zip(*placed, strict=True):
            self.ranks[pid] = rank
            self.index.upsert(pid, None, None, 1, 0, rank, True)
        self.names.update(batch)

    def in_name_order(self) -> bool:
        """The ranks sort the names as SQL does (all distinct here), in the array and in the index."""
        order = sorted(self.names, key=lambda pid: self.names[pid])
        by_rank = sorted(self.names, key=lambda pid: self.ranks[pid])
        return order == by_rank == self.index.query("name", 0, 10**6)[0]


def test_runs_into_one_gap_in_descending_order_are_relabelled_not_reloaded() -> None:
    # What a sync of the fake Zoho did: 200 names a batch, each batch below the one before, in one gap.
    ranked = Ranked({1: "apple", 2: "banana"}, array("q", [0, GAP, 2 * GAP]))
    next_id = 3
    for batch_no in range(150):
        batch = [(next_id + k, f"apricot {999 - batch_no:03d} {k:03d}") for k in range(200)]
        next_id += 200
        ranked.add(batch)
        if batch_no % 25 == 0:
            assert ranked.in_name_order(), batch_no
    assert ranked.in_name_order()
    assert 0 < ranked.relabels < 150 // 5  # each relabel leaves room for many runs after it


def test_widen_keeps_the_order_and_equal_names_and_stays_inside_its_window() -> None:
    ranks = array("q", [0, 100, 100, 101, 102, 5 * 2**50, 0])  # 1 and 2 share a name; the gap is 101-102
    ranked = Ranked({1: "b", 2: "b", 3: "c", 4: "d", 5: "x"}, ranks)
    ids, out = widen(ranked.index, 101, 102, 3) or ([], [])
    new = dict(zip(ids, out, strict=True))
    assert set(new) == {1, 2, 3, 4}  # 5 is outside the window: untouched
    assert new[1] == new[2] < new[3] < new[4] < ranks[5]
    assert new[4] - new[3] >= 4 * RELABEL_SPACING  # room for the 3 names (and more) in the gap
    assert new[3] - new[1] >= RELABEL_SPACING
    assert spread(new[3], new[4], 3) is not None


def test_widen_gives_up_on_a_window_too_big() -> None:
    n = RELABEL_MAX + 1  # names 1 apart: no window has room for them
    crowded = CatalogIndex()
    crowded.build(list(range(n)), [None] * n, [None] * n, [1] * n, [0] * n, list(range(n)), [True] * n)
    assert widen(crowded, 10, 11, 1) is None
    assert crowded.query("name", 0, 3) == ([0, 1, 2], n)  # nothing moved
    ranks = array("q", [0, 5, 6, 0])
    refused: list[tuple[int, int, int]] = []

    def no(lo: int, hi: int, count: int) -> bool:
        refused.append((lo, hi, count))
        return False

    assert assign([(3, None, 1, None, 2)], ranks, lambda _pid: True, no) is None  # then a full load
    assert refused == [(5, 6, 1)]
