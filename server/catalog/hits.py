"""Search hits per process: the ids a normalised `q` matched, remembered so that the other pages and sorts
of that search need no new scan of the search texts (core_ext.SearchIndex; the in-memory index filters,
sorts and counts them).

Exact by construction: an entry is keyed by the epoch and the *search version* of the index state its ids
were found in (LiveCatalog.search_version: the last change to a searchable text or to which products exist
and are active), so it stays valid across stock and price changes and is never used after a change that
could alter what the search matches. Bounded twice, least recently used first: by
entries and by the ids held in all of them (a search most products match is large; a single one larger
than the id budget is never kept).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict

Key = tuple[str, int, str]  # (epoch, search version, normalised q)


class SearchHits:
    """A small LRU of {(epoch, search version, q): ids}, with ids as 4-byte integers (array 'i')."""

    def __init__(self, max_entries: int, max_ids: int) -> None:
        self.max_entries = max_entries
        self.max_ids = max_ids
        self._entries: OrderedDict[Key, array[int]] = OrderedDict()
        self._ids = 0  # ids held in all entries
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ids(self) -> int:
        """Ids held in all entries."""
        return self._ids

    def get(self, key: Key) -> array[int] | None:
        """The remembered ids of a search in one version, or None."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: Key, ids: array[int]) -> None:
        """Remember ids (dropping the least recently used entries past either bound)."""
        if key in self._entries or self.max_entries == 0 or len(ids) > self.max_ids:
            return
        self._entries[key] = ids
        self._ids += len(ids)
        while len(self._entries) > self.max_entries or self._ids > self.max_ids:
            _, old = self._entries.popitem(last=False)
            self._ids -= len(old)

    def report(self) -> dict[str, int]:
        """The memo's line in /ready."""
        return {"entries": len(self), "ids": self._ids, "hits": self.hits, "misses": self.misses}
