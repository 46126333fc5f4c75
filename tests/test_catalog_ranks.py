"""server/catalog/ranks.py on its own: placed ranks keep the name order; a sync's batches in name order fit in
one gap; a gap that runs out, or a neighbour the index does not list, asks for a full load."""

from __future__ import annotations

from array import array

from server.catalog.ranks import HIGH, LOW, assign, spread

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
