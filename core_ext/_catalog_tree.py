"""The category tree of ``CatalogIndex``, shared by both builds: categories are few (tens to thousands),
so plain Python is fast enough, and one implementation keeps the builds' tree semantics identical.

Categories live in dense *slots*; products store a slot. A slot exists for every category the index has
heard of: from ``replace()`` (the categories table) and from products whose category is not in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["MAX_ID", "CategoryTree", "check_id", "check_int64"]

# products.id and categories.id are PostgreSQL int4 identities.
MAX_ID: Final = 2**31 - 1
_INT64: Final = 2**63


def check_id(value: object, what: str) -> int:
    """An id as an int in 0..MAX_ID (TypeError for non-ints and bools, ValueError out of range)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected int, got {type(value).__name__}")
    if not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} = {value}: must be in 0..{MAX_ID}")
    return int(value)


def check_int64(value: object, what: str) -> int:
    """A signed 64-bit int (TypeError for non-ints and bools, OverflowError beyond 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what}: expected int, got {type(value).__name__}")
    if not -_INT64 <= value < _INT64:
        raise OverflowError(f"{what} = {value}: out of the signed 64-bit range")
    return int(value)


class CategoryTree:
    """Slots, parents and activity of categories, with the walks the catalog SQL does."""

    __slots__ = ("_children", "_masks", "_slot", "active", "ids", "known", "parent")

    def __init__(self) -> None:
        self._slot: dict[int, int] = {}
        self.ids: list[int] = []  # slot -> category id
        self.parent: list[int] = []  # slot -> parent slot, -1 for none
        self.active: list[bool] = []
        self.known: list[bool] = []  # in the categories table (not only named by a product)
        self._children: list[list[int]] | None = None
        self._masks: dict[int, bytes | None] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, category_id: int) -> int:
        """The slot of a category, or -1."""
        return self._slot.get(category_id, -1)

    def slot(self, category_id: int) -> int:
        """The slot of a category, created (unknown, inactive, no parent) when missing."""
        s = self._slot.get(category_id)
        if s is None:
            s = self._slot[category_id] = len(self.ids)
            self.ids.append(category_id)
            self.parent.append(-1)
            self.active.append(False)
            self.known.append(False)
            self._changed()
        return s

    def replace(self, ids: Sequence[int], parents: Sequence[int | None], active: Sequence[object]) -> None:
        """Replace the categories table; slots of categories that left it stay (products may name them)."""
        if not len(ids) == len(parents) == len(active):
            raise ValueError("set_categories: ids, parents and active must have the same length")
        checked_ids = [check_id(v, f"ids[{k}]") for k, v in enumerate(ids)]
        if len(set(checked_ids)) != len(checked_ids):
            raise ValueError("set_categories: duplicate category id")
        checked_parents = [None if p is None else check_id(p, f"parents[{k}]") for k, p in enumerate(parents)]
        flags = [_flag(a, f"active[{k}]") for k, a in enumerate(active)]
        for s in range(len(self.ids)):
            self.parent[s] = -1
            self.active[s] = False
            self.known[s] = False
        for cid, pid, on in zip(checked_ids, checked_parents, flags, strict=True):
            s = self.slot(cid)
            self.parent[s] = -1 if pid is None else self.slot(pid)
            self.active[s] = on
            self.known[s] = True
        self._changed()

    def _changed(self) -> None:
        self._children = None
        self._masks.clear()

    def children(self) -> list[list[int]]:
        """Child slots of every slot (active or not), ascending."""
        if self._children is None:
            kids: list[list[int]] = [[] for _ in self.ids]
            for s, p in enumerate(self.parent):
                if p >= 0:
                    kids[p].append(s)
            self._children = kids
        return self._children

    def _subtree(self, s: int) -> list[int]:
        # The SQL filter's recursive CTE: every category reachable through parent_id, active or not;
        # `visited` ends the walk on a cycle as UNION does.
        kids = self.children()
        seen = {s}
        todo = [s]
        while todo:
            for c in kids[todo.pop()]:
                if c not in seen:
                    seen.add(c)
                    todo.append(c)
        return sorted(seen)

    def subtree_mask(self, category_id: int) -> bytes | None:
        """One byte per slot, 1 where a product of that slot matches ``category_id=``; None: none can."""
        if category_id in self._masks:
            return self._masks[category_id]
        s = self.find(category_id)
        mask: bytes | None = None
        if s >= 0:
            buf = bytearray(len(self.ids))
            for c in self._subtree(s):
                buf[c] = 1
            mask = bytes(buf)
        if len(self._masks) >= 256:  # bounded: category ids come from requests
            self._masks.clear()
        self._masks[category_id] = mask
        return mask

    def facet_groups(self, category_id: int | None) -> tuple[list[int], list[list[int]]]:
        """(facet category ids, per slot the facet indexes a product of that slot counts in).

        The facets are the active children of ``category_id`` (the active roots without one), ascending;
        each counts its whole subtree as the category filter walks it, so a facet's count is the total
        that filtering by it returns.
        """
        if category_id is None:
            heads = [
                s for s in range(len(self.ids)) if self.known[s] and self.active[s] and self.parent[s] < 0
            ]
        else:
            s = self.find(category_id)
            heads = [] if s < 0 else [c for c in self.children()[s] if self.active[c]]
        heads.sort(key=self.ids.__getitem__)
        members: list[list[int]] = [[] for _ in self.ids]
        for k, head in enumerate(heads):
            for c in self._subtree(head):
                members[c].append(k)
        return [self.ids[h] for h in heads], members

    def totals(self, own: Sequence[int]) -> dict[int, int]:
        """repo.CATEGORIES' counts: per active category, ``own`` summed over the tree walked through active
        categories only (``own[slot]`` = active products in that slot)."""
        n = len(self.ids)
        on = [self.known[s] and self.active[s] for s in range(n)]
        up = [
            self.parent[s] if on[s] and self.parent[s] >= 0 and on[self.parent[s]] else -1 for s in range(n)
        ]
        pending = [0] * n
        for s in range(n):
            if up[s] >= 0:
                pending[up[s]] += 1
        total = [own[s] if on[s] else 0 for s in range(n)]
        ready = [s for s in range(n) if on[s] and pending[s] == 0]
        done = [False] * n
        while ready:  # leaves first: a category's total is its own plus its finished children's
            s = ready.pop()
            done[s] = True
            p = up[s]
            if p >= 0:
                total[p] += total[s]
                pending[p] -= 1
                if pending[p] == 0:
                    ready.append(p)
        # What is left sits on parent cycles: each member's tree is the whole cycle with what hangs off it,
        # whose totals already flowed into the cycle's members above.
        for s in range(n):
            if on[s] and not done[s]:
                cycle = [s]
                p = up[s]
                while p != s:
                    cycle.append(p)
                    p = up[p]
                shared = sum(total[c] for c in cycle)
                for c in cycle:
                    total[c] = shared
                    done[c] = True
        return {self.ids[s]: total[s] for s in range(n) if on[s]}


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, int):
        raise TypeError(f"{what}: expected bool, got {type(value).__name__}")
    return bool(value)
