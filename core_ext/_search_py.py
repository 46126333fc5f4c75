"""Pure-Python ``SearchIndex``: substring search over one UTF-8 text per product, in one buffer.

Layout (the compiled ``_search`` has the same one, in C arrays):

- ``buffer``: every record's text followed by SEP (``\\x1e``), in the order records were added;
- ``starts[r]``: where record r begins (ascending, so a byte position names its record by bisection);
- ``owners[r]``: the product id of record r, or -1 once the record is dead (replaced or removed);
- ``records[id]``: the record of a product, -1 if none (grown on demand: ids are dense).

``search(term)`` finds the term in the buffer, names the record of each hit, keeps its owner (if alive) and
resumes at the next record, so each product is counted once. A term never spans two records: the texts hold
no SEP (``set`` refuses one), and a term that holds SEP matches nothing. Replacing a text appends a record and
kills the old one; when dead bytes exceed a third of the buffer (and COMPACT_MIN_BYTES) the live records are
copied into a new buffer, in order. Matching is on bytes, which for UTF-8 is matching on characters (a
UTF-8 sequence never matches inside another), as PostgreSQL's LIKE '%term%' does.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence

from core_ext._catalog_tree import check_id

SEP = 0x1E
_SEP = b"\x1e"
# Compaction waits for this many dead bytes at least (a few renames never copy the buffer).
COMPACT_MIN_BYTES = 1 << 16


def _text(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{what}: expected bytes, got {type(value).__name__}")
    if _SEP in value:
        raise ValueError(f"{what}: a text cannot hold the separator byte 0x1e")
    return value


class SearchIndex:
    """Which products' texts contain a term: one buffer of texts, scanned with bytes.find."""

    __slots__ = ("_buffer", "_compactions", "_count", "_dead_bytes", "_owners", "_records", "_starts")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._starts = array("q")
        self._owners = array("i")
        self._records = array("i")
        self._dead_bytes = 0
        self._count = 0  # products with a text
        self._compactions = 0

    def __len__(self) -> int:
        return self._count

    @property
    def count(self) -> int:
        """Products with a text."""
        return self._count

    @property
    def compactions(self) -> int:
        """Compactions done so far."""
        return self._compactions

    def __contains__(self, product_id: object) -> bool:
        return self._record_of(product_id) >= 0

    @property
    def memory_bytes(self) -> int:
        """Bytes held: the buffer and the three arrays."""
        return len(self._buffer) + 8 * len(self._starts) + 4 * len(self._owners) + 4 * len(self._records)

    @property
    def dead_bytes(self) -> int:
        """Bytes of dead records in the buffer (reclaimed by compaction)."""
        return self._dead_bytes

    def _record_of(self, product_id: object) -> int:
        if isinstance(product_id, bool) or not isinstance(product_id, int):
            return -1
        if 0 <= product_id < len(self._records):
            return self._records[product_id]
        return -1

    def _end(self, record: int) -> int:
        # Where record's SEP is.
        starts = self._starts
        return (starts[record + 1] if record + 1 < len(starts) else len(self._buffer)) - 1

    def get(self, product_id: int) -> bytes | None:
        """The text of a product, or None."""
        r = self._record_of(product_id)
        return None if r < 0 else bytes(self._buffer[self._starts[r] : self._end(r)])

    def set(self, product_id: int, text: bytes) -> None:
        """Give a product its text (replacing any; the same text again changes nothing)."""
        self.set_many([product_id], [text])

    def set_many(self, ids: Sequence[int], texts: Sequence[bytes]) -> None:
        """set() each pair (a load of many products at once). Checked first: on an error nothing changes."""
        if len(ids) != len(texts):
            raise ValueError(f"ids and texts differ in length ({len(ids)} != {len(texts)})")
        pairs = enumerate(zip(ids, texts, strict=True))
        checked = [(check_id(i, f"ids[{k}]"), _text(t, f"texts[{k}]")) for k, (i, t) in pairs]
        records, buffer = self._records, self._buffer
        top = max((i for i, _ in checked), default=-1)
        if top >= len(records):
            records.frombytes(b"\xff" * 4 * (top + 1 - len(records)))
        for product_id, text in checked:
            old = records[product_id]
            if old >= 0:
                if buffer[self._starts[old] : self._end(old)] == text:
                    continue
                self._kill(old)
            else:
                self._count += 1
            records[product_id] = len(self._owners)
            self._starts.append(len(buffer))
            self._owners.append(product_id)
            buffer += text
            buffer.append(SEP)
        self._maybe_compact()

    def trim(self) -> None:
        """Give back the growth room of the buffer and the arrays (after a load; here nothing to do: the
        memory counted is their length)."""

    def remove(self, product_id: int) -> None:
        """Forget a product's text (nothing if it has none)."""
        r = self._record_of(check_id(product_id, "product_id"))
        if r >= 0:
            self._kill(r)
            self._records[product_id] = -1
            self._count -= 1
            self._maybe_compact()

    def _kill(self, record: int) -> None:
        self._owners[record] = -1
        self._dead_bytes += self._end(record) + 1 - self._starts[record]

    def _maybe_compact(self) -> None:
        if self._dead_bytes >= COMPACT_MIN_BYTES and 3 * self._dead_bytes > len(self._buffer):
            self.compact()

    def compact(self) -> None:
        """Copy the live records into a new buffer (in their order), dropping the dead ones."""
        buffer, starts, owners = bytearray(), array("q"), array("i")
        old = self._buffer
        for r, owner in enumerate(self._owners):
            if owner >= 0:
                self._records[owner] = len(owners)
                starts.append(len(buffer))
                owners.append(owner)
                buffer += old[self._starts[r] : self._end(r) + 1]
        self._buffer, self._starts, self._owners = buffer, starts, owners
        self._dead_bytes = 0
        self._compactions += 1

    def search(self, term: bytes) -> array[int]:
        """Ids of the products whose text contains `term` (each once), in the buffer's order ('i' array)."""
        if not isinstance(term, bytes):
            raise TypeError(f"term: expected bytes, got {type(term).__name__}")
        owners = self._owners
        if not term:
            return array("i", [o for o in owners if o >= 0])
        out = array("i")
        if _SEP in term:
            return out
        starts, find = self._starts, self._buffer.find
        n = len(starts)
        at = find(term)
        while at >= 0:
            r = bisect_right(starts, at) - 1
            owner = owners[r]
            if owner >= 0:
                out.append(owner)
            if r + 1 >= n:
                break
            at = find(term, starts[r + 1])
        return out
