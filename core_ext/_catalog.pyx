# cython: autotestdict=False
"""Compiled ``CatalogIndex``: columns by product id and three sorted orderings, in C arrays.

Memory comes from PyMem_Raw* (thread-safe like malloc, and traced by tracemalloc, so tests can check
``memory_bytes`` against what is really held).

Same design, API and answers as ``_catalog_py`` (read its docstring); the category tree is the shared
pure-Python ``CategoryTree`` since categories are few and touched only per query, never per product.
"""

cimport cython
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check, PyLong_FromLongLong
from cpython.object cimport PyObject
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint64_t
from cpython.mem cimport PyMem_RawCalloc as calloc
from cpython.mem cimport PyMem_RawFree as free
from cpython.mem cimport PyMem_RawMalloc as malloc
from cpython.mem cimport PyMem_RawRealloc as realloc
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

from core_ext._catalog_kernels cimport (
    Facets,
    Filter,
    KeyId,
    _bit,
    _cmp_key_id,
    _count_facets,
    _insert_at,
    _lower,
    _remove_at,
    _scan_all,
    _scan_words,
    _walk,
)

from array import array as _array

from core_ext._catalog_py import SORTS as _SORTS
from core_ext._catalog_tree import MAX_ID as _MAX_ID
from core_ext._catalog_tree import CategoryTree, check_id, check_int64

cdef enum:
    PRESENT = 1
    ACTIVE = 2
    IN_STOCK = 4
    HAS_PRICE = 8
    # upsert_many: below MERGE_ROWS rows it moves them one by one (each a memmove of up to n ids in each
    # ordering); up to BULK_ROWS it merges them in (one pass over each ordering); beyond, it re-sorts.
    MERGE_ROWS = 8
    BULK_ROWS = 2048

cdef int64_t _C_MAX_ID = 2147483647


cdef inline bint _matches(CatalogIndex self, const Filter* f, Py_ssize_t i) noexcept:
    cdef unsigned char fl = self._flags[i]
    cdef int32_t c
    cdef int64_t p
    if not fl & ACTIVE:
        return False
    if f.stock >= 0 and ((fl & IN_STOCK) != 0) != f.stock:
        return False
    if f.sub is not NULL:
        c = self._cat[i] + 1  # sub[0] stands for "no category"
        if c >= f.sublen or not f.sub[c]:
            return False
    if f.use_lo or f.use_hi:
        if not fl & HAS_PRICE:
            return False
        p = self._price[i]
        if (f.use_lo and p < f.lo) or (f.use_hi and p > f.hi):
            return False
    return True


cdef str _where(str name, Py_ssize_t k):
    return name if k < 0 else f"{name}[{k}]"


cdef int64_t _int64(object v, str name, Py_ssize_t k) except? -1:
    cdef int overflow = 0
    cdef long long x
    if type(v) is bool or not PyLong_Check(v):
        raise TypeError(f"{_where(name, k)}: expected int, got {type(v).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        raise OverflowError(f"{_where(name, k)} = {v}: out of the signed 64-bit range")
    return x


cdef int32_t _id(object v, str name, Py_ssize_t k) except? -1:
    cdef int overflow = 0
    cdef long long x
    if type(v) is bool or not PyLong_Check(v):
        raise TypeError(f"{_where(name, k)}: expected int, got {type(v).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x < 0 or x > _C_MAX_ID:
        raise ValueError(f"{_where(name, k)} = {v}: must be in 0..{_MAX_ID}")
    return <int32_t>x


cdef bint _flag(object v, str name, Py_ssize_t k) except? -1:
    if not PyLong_Check(v):
        raise TypeError(f"{_where(name, k)}: expected bool, got {type(v).__name__}")
    return bool(v)


cdef bint _positive(object v, str name, Py_ssize_t k) except? -1:
    cdef int overflow = 0
    cdef long long x
    if type(v) is bool or not PyLong_Check(v):
        raise TypeError(f"{_where(name, k)}: expected int, got {type(v).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    return overflow > 0 or (overflow == 0 and x > 0)


@cython.auto_pickle(False)
@cython.final
cdef class _Rows:
    """Checked column lists as C arrays (all rows are checked before any is applied)."""

    cdef Py_ssize_t n
    cdef int32_t* ids
    cdef int32_t* cats
    cdef int64_t* prices
    cdef int64_t* created
    cdef int64_t* ranks
    cdef unsigned char* bits   # ACTIVE | IN_STOCK | HAS_PRICE

    def __dealloc__(self):
        free(self.ids)
        free(self.cats)
        free(self.prices)
        free(self.created)
        free(self.ranks)
        free(self.bits)


cdef _Rows _read_rows(CatalogIndex index, tuple cols):
    cdef list seqs = [PySequence_Fast(c, "columns must be sequences") for c in cols]
    cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seqs[0])
    cdef Py_ssize_t k
    cdef object v
    cdef PyObject* found
    cdef dict slots = index._slots
    cdef _Rows rows = _Rows()
    for s in seqs:
        if PySequence_Fast_GET_SIZE(s) != n:
            raise ValueError("columns must have the same length")
    ids, cats, prices, stocks, created, ranks, active = seqs
    rows.n = n
    rows.ids = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
    rows.cats = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
    rows.prices = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
    rows.created = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
    rows.ranks = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
    rows.bits = <unsigned char*>malloc(max(n, 1))
    if (rows.ids is NULL or rows.cats is NULL or rows.prices is NULL or rows.created is NULL
            or rows.ranks is NULL or rows.bits is NULL):
        raise MemoryError()
    for k in range(n):
        rows.ids[k] = _id(<object>PySequence_Fast_GET_ITEM(ids, k), "ids", k)
        v = <object>PySequence_Fast_GET_ITEM(cats, k)
        if v is None:
            rows.cats[k] = -1
        else:
            found = PyDict_GetItem(slots, v) if type(v) is int else NULL
            if found is not NULL:
                rows.cats[k] = <int32_t><object>found
            else:
                rows.cats[k] = index._tree.slot(_id(v, "categories", k))
        v = <object>PySequence_Fast_GET_ITEM(prices, k)
        rows.bits[k] = 0
        if v is None:
            rows.prices[k] = 0
        else:
            rows.prices[k] = _int64(v, "prices", k)
            rows.bits[k] |= HAS_PRICE
        if _positive(<object>PySequence_Fast_GET_ITEM(stocks, k), "stocks", k):
            rows.bits[k] |= IN_STOCK
        rows.created[k] = _int64(<object>PySequence_Fast_GET_ITEM(created, k), "created_us", k)
        rows.ranks[k] = _int64(<object>PySequence_Fast_GET_ITEM(ranks, k), "name_ranks", k)
        if _flag(<object>PySequence_Fast_GET_ITEM(active, k), "active", k):
            rows.bits[k] |= ACTIVE
    return rows


# Matches of the last few filters (without `only`): paging or re-sorting one filter skips the pass over the
# columns. Kept exact under single-product updates; dropped when the columns are rebuilt or the tree changes.
cdef enum:
    CACHED_FILTERS = 8


@cython.auto_pickle(False)
@cython.final
cdef class _Cached:
    def __dealloc__(self):
        free(self.words)


cdef Py_ssize_t _drop_marked(int32_t* order, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t at,
                             const unsigned char* mark) noexcept:
    """Move the ids of order[lo:hi] that are not marked to order[at:], in order; return the end."""
    cdef Py_ssize_t p
    cdef int32_t x
    for p in range(lo, hi):
        x = order[p]
        if not mark[x]:
            order[at] = x
            at += 1
    return at


cdef Py_ssize_t _merge_in(const int32_t* order, Py_ssize_t n, const int64_t* keys, const KeyId* add,
                          Py_ssize_t m, int32_t* out) noexcept:
    """order[:n] (sorted by (keys[id], id), or by id when keys is NULL) and add[:m] (sorted by (key, id),
    key 0 when keys is NULL) merged into out; return n + m."""
    cdef Py_ssize_t a = 0, b = 0, o = 0
    cdef int32_t x
    cdef int64_t kx
    while a < n and b < m:
        x = order[a]
        kx = keys[x] if keys is not NULL else 0
        if kx < add[b].key or (kx == add[b].key and x < add[b].id):
            out[o] = x
            a += 1
        else:
            out[o] = add[b].id
            b += 1
        o += 1
    while a < n:
        out[o] = order[a]
        a += 1
        o += 1
    while b < m:
        out[o] = add[b].id
        b += 1
        o += 1
    return o


cdef int _merge_rows(CatalogIndex self, _Rows rows) except -1:
    """upsert_many's middle path, the result of applying the rows one by one: the rows' ids leave each
    ordering in one pass, their columns are stored in row order (a repeated id keeps its last row), then
    their keys are sorted and merged back in (one pass over each ordering): O(n + k log k) for k rows, where
    one by one costs a memmove of up to n ids per row and ordering (200 new names into 60,000: ~1.5 ms)."""
    cdef Py_ssize_t k, m = 0, mp = 0, mu = 0, added = 0, kept, kept_priced, end
    cdef int32_t i
    cdef unsigned char f
    cdef unsigned char* mark = NULL
    cdef int32_t* moved = NULL
    cdef KeyId* keys = NULL
    cdef KeyId* unpriced = NULL
    cdef int32_t* merged = NULL
    for k in range(rows.n):
        self._grow(rows.ids[k])
    try:
        mark = <unsigned char*>malloc(self._cap)
        moved = <int32_t*>malloc(rows.n * sizeof(int32_t))
        keys = <KeyId*>malloc(rows.n * sizeof(KeyId))
        unpriced = <KeyId*>malloc(rows.n * sizeof(KeyId))
        if mark is NULL or moved is NULL or keys is NULL or unpriced is NULL:
            raise MemoryError()
        memset(mark, 0, self._cap)
        for k in range(rows.n):
            i = rows.ids[k]
            if not mark[i]:
                mark[i] = 1
                moved[m] = i
                m += 1
                added += not self._flags[i] & PRESENT
        # Every allocation before the first change: a MemoryError leaves the index as it was.
        self._reserve(self._n + added)
        merged = <int32_t*>malloc(max(self._n + added, 1) * sizeof(int32_t))
        if merged is NULL:
            raise MemoryError()
        # Out of every ordering (the marked ids that are present), by position alone: no key is read. A batch
        # of new ids alone (a sync's inserts) has nothing to take out.
        kept, kept_priced = self._n, self._n_priced
        if added < m:
            kept = _drop_marked(self._by_name, 0, self._n, 0, mark)
            _drop_marked(self._by_created, 0, self._n, 0, mark)
            kept_priced = _drop_marked(self._by_price, 0, self._n_priced, 0, mark)
            _drop_marked(self._by_price, self._n_priced, self._n, kept_priced, mark)
        for k in range(rows.n):
            i = rows.ids[k]
            f = self._flags[i]
            if f & PRESENT:
                if f & ACTIVE:
                    self._n_active -= 1
            else:
                self._n += 1
            self._store(i, rows.cats[k], rows.bits[k] & HAS_PRICE, rows.prices[k], rows.bits[k] & IN_STOCK,
                        rows.created[k], rows.ranks[k], rows.bits[k] & ACTIVE)
        for k in range(m):
            keys[k].key, keys[k].id = self._rank[moved[k]], moved[k]
        qsort(keys, m, sizeof(KeyId), _cmp_key_id)
        memcpy(self._by_name, merged,
               _merge_in(self._by_name, kept, self._rank, keys, m, merged) * sizeof(int32_t))
        for k in range(m):
            keys[k].key, keys[k].id = self._created[moved[k]], moved[k]
        qsort(keys, m, sizeof(KeyId), _cmp_key_id)
        memcpy(self._by_created, merged,
               _merge_in(self._by_created, kept, self._created, keys, m, merged) * sizeof(int32_t))
        for k in range(m):
            i = moved[k]
            if self._flags[i] & HAS_PRICE:
                keys[mp].key, keys[mp].id = self._price[i], i
                mp += 1
            else:
                unpriced[mu].key, unpriced[mu].id = 0, i
                mu += 1
        qsort(keys, mp, sizeof(KeyId), _cmp_key_id)
        qsort(unpriced, mu, sizeof(KeyId), _cmp_key_id)
        end = _merge_in(self._by_price, kept_priced, self._price, keys, mp, merged)
        end += _merge_in(self._by_price + kept_priced, kept - kept_priced, NULL, unpriced, mu, merged + end)
        memcpy(self._by_price, merged, end * sizeof(int32_t))
        self._n_priced = kept_priced + mp
        for k in range(m):
            self._recheck(moved[k])  # each cached filter's bit and total, once per id
    finally:
        free(mark)
        free(moved)
        free(keys)
        free(unpriced)
        free(merged)
    return 0


@cython.auto_pickle(False)
cdef class CatalogIndex:
    """Every list, count and facet of the consumer catalog answered from memory, exactly as the SQL does."""

    def __cinit__(self, *args, **kwargs):
        # No __init__: a zero-argument __init__ has no signature stubtest can read; refuse arguments here.
        if args or kwargs:
            raise TypeError("CatalogIndex() takes no arguments")
        self._cap = self._n = self._pcap = self._n_priced = self._n_active = 0
        self._cache = []
        self._tree = CategoryTree()
        self._slots = self._tree._slot

    def __dealloc__(self):
        _release(self)

    # -- sizes -------------------------------------------------------------------------------------------
    def __len__(self):
        return self._n

    def __contains__(self, product_id):
        if type(product_id) is bool or not PyLong_Check(product_id):
            return False
        return 0 <= product_id < self._cap and bool(self._flags[<Py_ssize_t>product_id] & PRESENT)

    @property
    def active_count(self):
        """Number of active products (the total of a query without filters)."""
        return self._n_active

    @property
    def memory_bytes(self):
        """Bytes held by the columns and orderings (not the category tree, which is per category)."""
        words = ((self._cap + 63) >> 6) * 8
        return self._cap * (1 + 4 + 8 * 3) + words * (3 + len(self._cache)) + self._pcap * 4 * 3

    # -- storage -----------------------------------------------------------------------------------------
    cdef int _grow(self, Py_ssize_t i) except -1:
        cdef Py_ssize_t n = self._cap, new, k
        if i < n:
            return 0
        # Amortised growth for ids beyond the end (as the pure twin); build() sizes exactly.
        new = i + 1 if n == 0 else max(i + 1, min(_C_MAX_ID + 1, n + n // 8 + 1024))
        cdef void* p
        p = realloc(self._flags, new)
        if p is NULL:
            raise MemoryError()
        self._flags = <unsigned char*>p
        p = realloc(self._cat, new * sizeof(int32_t))
        if p is NULL:
            raise MemoryError()
        self._cat = <int32_t*>p
        p = realloc(self._price, new * sizeof(int64_t))
        if p is NULL:
            raise MemoryError()
        self._price = <int64_t*>p
        p = realloc(self._created, new * sizeof(int64_t))
        if p is NULL:
            raise MemoryError()
        self._created = <int64_t*>p
        p = realloc(self._rank, new * sizeof(int64_t))
        if p is NULL:
            raise MemoryError()
        self._rank = <int64_t*>p
        cdef Py_ssize_t words = (n + 63) >> 6, new_words = (new + 63) >> 6
        p = realloc(self._mask, new_words * sizeof(uint64_t))
        if p is NULL:
            raise MemoryError()
        self._mask = <uint64_t*>p
        p = realloc(self._act, new_words * sizeof(uint64_t))
        if p is NULL:
            raise MemoryError()
        self._act = <uint64_t*>p
        p = realloc(self._stk, new_words * sizeof(uint64_t))
        if p is NULL:
            raise MemoryError()
        self._stk = <uint64_t*>p
        # Bits of ids >= n in the old last word are already 0 (no product there).
        memset(self._act + words, 0, (new_words - words) * sizeof(uint64_t))
        memset(self._stk + words, 0, (new_words - words) * sizeof(uint64_t))
        self._cache = []  # shorter than the ids now
        memset(self._flags + n, 0, new - n)
        for k in range(n, new):
            self._cat[k] = -1
            self._price[k] = self._created[k] = self._rank[k] = 0
        self._cap = new
        return 0

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t new
        cdef void* p
        if n <= self._pcap:
            return 0
        new = max(n, self._pcap + self._pcap // 8 + 1024)
        p = realloc(self._by_name, new * sizeof(int32_t))
        if p is NULL:
            raise MemoryError()
        self._by_name = <int32_t*>p
        p = realloc(self._by_price, new * sizeof(int32_t))
        if p is NULL:
            raise MemoryError()
        self._by_price = <int32_t*>p
        p = realloc(self._by_created, new * sizeof(int32_t))
        if p is NULL:
            raise MemoryError()
        self._by_created = <int32_t*>p
        self._pcap = new
        return 0

    cdef void _store(self, int32_t i, int32_t cat, bint has_price, int64_t price, bint stock,
                     int64_t created, int64_t rank, bint on) noexcept:
        self._cat[i] = cat
        self._price[i] = price if has_price else 0
        self._created[i] = created
        self._rank[i] = rank
        self._flags[i] = PRESENT | (ACTIVE if on else 0) | (IN_STOCK if stock else 0) | (
            HAS_PRICE if has_price else 0)
        if on:
            self._n_active += 1
        self._set_bits(i, on, stock)

    cdef void _set_bits(self, int32_t i, bint on, bint stock) noexcept:
        cdef uint64_t bit = (<uint64_t>1) << (i & 63)
        if on:
            self._act[i >> 6] |= bit
        else:
            self._act[i >> 6] &= ~bit
        if stock:
            self._stk[i >> 6] |= bit
        else:
            self._stk[i >> 6] &= ~bit

    cdef void _recheck(self, int32_t i) noexcept:
        """Bring every cached filter's bit and total for ``i`` up to date after it changed."""
        cdef _Cached c
        cdef bint was, now
        cdef uint64_t bit = (<uint64_t>1) << (i & 63)
        for c in self._cache:
            was = _bit(c.words, i)
            now = _matches(self, &c.filter, i)
            if was != now:
                c.words[i >> 6] ^= bit
                c.total += 1 if now else -1

    cdef void _unlink(self, int32_t i, bint name, bint price, bint created) noexcept:
        # Positions come from the keys still stored for `i`; every ordering holds _n ids on entry.
        cdef Py_ssize_t n = self._n
        if name:
            _remove_at(self._by_name, n, _lower(self._by_name, 0, n, self._rank, self._rank[i], i))
        if price:
            if self._flags[i] & HAS_PRICE:
                _remove_at(self._by_price, n, _lower(self._by_price, 0, self._n_priced, self._price,
                                                     self._price[i], i))
                self._n_priced -= 1
            else:
                _remove_at(self._by_price, n, _lower(self._by_price, self._n_priced, n, NULL, 0, i))
        if created:
            _remove_at(self._by_created, n, _lower(self._by_created, 0, n, self._created, self._created[i], i))

    cdef void _link(self, int32_t i, bint name, bint price, bint created) noexcept:
        # Each ordering named here holds _n - 1 ids on entry (the others hold _n).
        cdef Py_ssize_t n = self._n - 1
        if name:
            _insert_at(self._by_name, n, _lower(self._by_name, 0, n, self._rank, self._rank[i], i), i)
        if price:
            if self._flags[i] & HAS_PRICE:
                _insert_at(self._by_price, n, _lower(self._by_price, 0, self._n_priced, self._price,
                                                     self._price[i], i), i)
                self._n_priced += 1
            else:
                _insert_at(self._by_price, n, _lower(self._by_price, self._n_priced, n, NULL, 0, i), i)
        if created:
            _insert_at(self._by_created, n, _lower(self._by_created, 0, n, self._created, self._created[i], i),
                       i)

    cdef int _apply(self, int32_t i, int32_t cat, bint has_price, int64_t price, bint stock,
                    int64_t created, int64_t rank, bint on) except -1:
        cdef unsigned char f
        cdef bint had, moved_name, moved_price, moved_created
        self._grow(i)
        f = self._flags[i]
        if not f & PRESENT:
            self._reserve(self._n + 1)
            self._store(i, cat, has_price, price, stock, created, rank, on)
            self._n += 1
            self._link(i, True, True, True)
            self._recheck(i)
            return 0
        # Flags arrive as masks (a bint holding 8 is true but not equal to 1): compare truth values.
        had = (f & HAS_PRICE) != 0
        moved_name = self._rank[i] != rank
        moved_price = had != (has_price != 0) or (had and self._price[i] != price)
        moved_created = self._created[i] != created
        self._unlink(i, moved_name, moved_price, moved_created)
        if f & ACTIVE:
            self._n_active -= 1
        self._store(i, cat, has_price, price, stock, created, rank, on)
        self._link(i, moved_name, moved_price, moved_created)
        self._recheck(i)
        return 0

    cdef int _sort_all(self, bint name_only=False) except -1:
        """Rebuild the orderings from the columns (build, large batches; the name order alone for ranks)."""
        cdef Py_ssize_t cap = self._cap, i, n = 0, np = 0, k
        cdef KeyId* tmp = <KeyId*>malloc(max(self._n, 1) * sizeof(KeyId))
        if tmp is NULL:
            raise MemoryError()
        try:
            for i in range(cap):
                if self._flags[i] & PRESENT:
                    tmp[n].key = self._rank[i]
                    tmp[n].id = <int32_t>i
                    n += 1
            qsort(tmp, n, sizeof(KeyId), _cmp_key_id)
            for k in range(n):
                self._by_name[k] = tmp[k].id
            if name_only:
                return 0
            for i in range(cap):
                if self._flags[i] & PRESENT:
                    tmp[np].key = self._created[i]
                    tmp[np].id = <int32_t>i
                    np += 1
            qsort(tmp, np, sizeof(KeyId), _cmp_key_id)
            for k in range(np):
                self._by_created[k] = tmp[k].id
            np = 0
            for i in range(cap):
                if self._flags[i] & HAS_PRICE:
                    tmp[np].key = self._price[i]
                    tmp[np].id = <int32_t>i
                    np += 1
            qsort(tmp, np, sizeof(KeyId), _cmp_key_id)
            for k in range(np):
                self._by_price[k] = tmp[k].id
            self._n_priced = np
            for i in range(cap):  # the unpriced, already in id order
                if self._flags[i] & PRESENT and not self._flags[i] & HAS_PRICE:
                    self._by_price[np] = <int32_t>i
                    np += 1
        finally:
            free(tmp)
        return 0

    # -- updates -----------------------------------------------------------------------------------------
    def set_categories(self, ids, parents, active):
        """Replace the category table: ids, parent ids (None for a root), is_active; position by position."""
        self._cache = []
        self._tree.replace(ids, parents, active)

    def build(self, ids, categories, prices, stocks, created_us, name_ranks, active):
        """Replace every product from column lists (one row per position); the category table stays."""
        cdef _Rows rows = _read_rows(self, (ids, categories, prices, stocks, created_us, name_ranks, active))
        cdef Py_ssize_t k, top = -1
        cdef unsigned char* seen
        cdef int32_t i
        for k in range(rows.n):
            if rows.ids[k] > top:
                top = rows.ids[k]
        seen = <unsigned char*>malloc((top >> 3) + 2)
        if seen is NULL:
            raise MemoryError()
        try:
            memset(seen, 0, (top >> 3) + 2)
            for k in range(rows.n):
                i = rows.ids[k]
                if seen[i >> 3] & (1 << (i & 7)):
                    raise ValueError("build: duplicate product id")
                seen[i >> 3] |= 1 << (i & 7)
        finally:
            free(seen)
        # Exact sizes: a fresh index holds what it was built with and nothing more.
        _release(self)
        self._cache = []
        self._grow(top)
        self._reserve(rows.n)
        for k in range(rows.n):
            self._store(rows.ids[k], rows.cats[k], rows.bits[k] & HAS_PRICE, rows.prices[k],
                        rows.bits[k] & IN_STOCK, rows.created[k], rows.ranks[k], rows.bits[k] & ACTIVE)
        self._n = rows.n
        self._sort_all()

    def upsert(self, product_id, category, price_cents, stock, created_us, name_rank, active):
        """Insert or replace one product; moves it in an ordering only when that ordering's key changed."""
        cdef int32_t i = _id(product_id, "ids", 0)
        cdef int32_t cat = -1
        cdef PyObject* found
        if category is not None:
            found = PyDict_GetItem(self._slots, category) if type(category) is int else NULL
            cat = <int32_t><object>found if found is not NULL else self._tree.slot(_id(category, "categories", 0))
        cdef bint has_price = price_cents is not None
        cdef int64_t price = _int64(price_cents, "prices", 0) if has_price else 0
        cdef bint in_stock = _positive(stock, "stocks", 0)
        cdef int64_t created = _int64(created_us, "created_us", 0)
        cdef int64_t rank = _int64(name_rank, "name_ranks", 0)
        cdef bint on = _flag(active, "active", 0)
        self._apply(i, cat, has_price, price, in_stock, created, rank, on)

    def upsert_many(self, ids, categories, prices, stocks, created_us, name_ranks, active):
        """``upsert`` for each position of the column lists, in order (all rows are checked first)."""
        cdef _Rows rows = _read_rows(self, (ids, categories, prices, stocks, created_us, name_ranks, active))
        cdef Py_ssize_t k
        cdef int32_t i
        cdef unsigned char f
        if rows.n < MERGE_ROWS:
            for k in range(rows.n):
                self._apply(rows.ids[k], rows.cats[k], rows.bits[k] & HAS_PRICE, rows.prices[k],
                            rows.bits[k] & IN_STOCK, rows.created[k], rows.ranks[k], rows.bits[k] & ACTIVE)
            return
        if rows.n <= BULK_ROWS:
            _merge_rows(self, rows)
            return
        # A large batch: overwrite the columns, then sort each ordering once (O(n log n), not O(rows * n)).
        self._cache = []
        for k in range(rows.n):
            i = rows.ids[k]
            self._grow(i)
            f = self._flags[i]
            if f & PRESENT:
                if f & ACTIVE:
                    self._n_active -= 1
            else:
                self._n += 1
            self._store(i, rows.cats[k], rows.bits[k] & HAS_PRICE, rows.prices[k], rows.bits[k] & IN_STOCK,
                        rows.created[k], rows.ranks[k], rows.bits[k] & ACTIVE)
        self._reserve(self._n)
        self._sort_all()

    def set_name_ranks(self, ids, name_ranks):
        """New name ranks for present products (after names changed); the other columns stay."""
        cdef object seq_ids = PySequence_Fast(ids, "ids must be a sequence of int")
        cdef object seq_ranks = PySequence_Fast(name_ranks, "name_ranks must be a sequence of int")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seq_ids), k
        if PySequence_Fast_GET_SIZE(seq_ranks) != n:
            raise ValueError("columns must have the same length")
        cdef int32_t* rid = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
        cdef int64_t* rrank = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
        cdef int32_t i
        try:
            if rid is NULL or rrank is NULL:
                raise MemoryError()
            for k in range(n):
                rid[k] = _id(<object>PySequence_Fast_GET_ITEM(seq_ids, k), "ids", k)
                rrank[k] = _int64(<object>PySequence_Fast_GET_ITEM(seq_ranks, k), "name_ranks", k)
                if rid[k] >= self._cap or not self._flags[rid[k]] & PRESENT:
                    raise ValueError(f"ids[{k}] = {rid[k]}: no such product")
            if n <= BULK_ROWS:
                for k in range(n):
                    i = rid[k]
                    if self._rank[i] != rrank[k]:
                        self._unlink(i, True, False, False)
                        self._rank[i] = rrank[k]
                        self._link(i, True, False, False)
            else:
                for k in range(n):
                    self._rank[rid[k]] = rrank[k]
                self._sort_all(True)
        finally:
            free(rid)
            free(rrank)

    def ranked_count(self, low, high):
        """How many products (active or not) have a name rank in [low, high] (two binary searches)."""
        cdef int64_t lo = _int64(low, "low", -1), hi = _int64(high, "high", -1)
        if lo > hi:
            return 0
        cdef Py_ssize_t start = _lower(self._by_name, 0, self._n, self._rank, lo, -1)
        return self._rank_end(start, hi) - start

    cdef Py_ssize_t _rank_end(self, Py_ssize_t start, int64_t hi) noexcept:
        # The first position from `start` on whose rank is above hi.
        if hi == 0x7FFFFFFFFFFFFFFF:
            return self._n
        return _lower(self._by_name, start, self._n, self._rank, hi + 1, -1)

    def respread_name_ranks(self, low, high, after, free):
        """Give the products (active or not) whose name rank is in [low, high] new ranks spread evenly
        strictly inside (low, high), in the order they have (equal ranks stay equal), with ``free`` empty
        slots after the last rank <= ``after``; returns their (ids, new ranks) in name order. The name order
        does not move (a local relabel of name ranks: server/catalog/ranks.py)."""
        cdef int64_t lo = _int64(low, "low", -1), hi = _int64(high, "high", -1)
        cdef int64_t gap = _int64(after, "after", -1)
        cdef Py_ssize_t extra = free, start, end, pos, distinct = 0, slot = 0
        cdef int64_t last = 0, rank, step
        cdef int32_t i
        if extra < 0:
            raise ValueError("free must be >= 0")
        if lo > hi:
            return [], []
        start = _lower(self._by_name, 0, self._n, self._rank, lo, -1)
        end = self._rank_end(start, hi)
        for pos in range(start, end):
            rank = self._rank[self._by_name[pos]]
            if pos == start or rank != last:
                distinct += 1
                last = rank
        wide = (<object>hi - <object>lo) // (distinct + extra + 1)  # Python ints: hi - lo may pass 2**63
        if wide < 1:
            raise ValueError("no room for these ranks between low and high")
        step = min(wide, 0x7FFFFFFFFFFFFFFF)
        ids, ranks = [], []
        for pos in range(start, end):
            i = self._by_name[pos]
            rank = self._rank[i]
            if pos == start or rank != last:
                slot += 1
                if rank > gap and (pos == start or last <= gap):
                    slot += extra
                last = rank
            # In unsigned arithmetic (it wraps, the true value is within int64): step * slot may pass 2**63.
            self._rank[i] = <int64_t>(<uint64_t>lo + <uint64_t>step * <uint64_t>slot)
            ids.append(i)
            ranks.append(self._rank[i])
        return ids, ranks

    def remove(self, product_id):
        """Forget a product; False when it was not there."""
        cdef int32_t i = _id(product_id, "product_id", -1)
        if i >= self._cap or not self._flags[i] & PRESENT:
            return False
        self._unlink(i, True, True, True)
        self._n -= 1
        if self._flags[i] & ACTIVE:
            self._n_active -= 1
        self._flags[i] = 0
        self._set_bits(i, False, False)
        self._recheck(i)
        return True

    # -- queries -----------------------------------------------------------------------------------------
    cdef int _filter(self, Filter* f, object category, object min_price, object max_price,
                     object in_stock) except -1:
        """Check the filter arguments into ``f`` (the category subtree is set by ``_mask_for``)."""
        f.sub = NULL
        f.sublen = 0
        f.use_lo = min_price is not None
        f.use_hi = max_price is not None
        if category is not None:
            _id(category, "category", -1)
        f.lo = _int64(min_price, "min_price", -1) if f.use_lo else 0
        f.hi = _int64(max_price, "max_price", -1) if f.use_hi else 0
        f.stock = -1 if in_stock is None else _flag(in_stock, "in_stock", -1)
        return 0

    cdef Py_ssize_t _scan(self, Filter* f, object only) except -1:
        """Mark the matching ids in ``_mask``; their number."""
        cdef Py_ssize_t i, k, n, total = 0
        cdef uint64_t* mask = self._mask
        cdef object seq
        if self._cap == 0:
            if only is not None:
                for v in only:
                    _id(v, "only[]", -1)
            return 0
        memset(mask, 0, ((self._cap + 63) >> 6) * sizeof(uint64_t))
        if only is None:
            if f.sub is NULL and not f.use_lo and not f.use_hi:
                return _scan_words(self._act, self._stk, self._cap, f.stock, mask)
            return _scan_all(self._flags, self._cat, self._price, self._cap, f, mask)
        if type(only) is _array and only.typecode == "i":
            return self._scan_ints(f, only)
        seq = PySequence_Fast(only, "only must be an iterable of int")
        n = PySequence_Fast_GET_SIZE(seq)
        for k in range(n):
            i = _id(<object>PySequence_Fast_GET_ITEM(seq, k), "only[]", -1)
            if i < self._cap and not _bit(mask, i) and _matches(self, f, i):
                mask[i >> 6] |= (<uint64_t>1) << (i & 63)
                total += 1
        return total

    cdef Py_ssize_t _scan_ints(self, Filter* f, const int[::1] ids) except -1:
        """``_scan`` of an ``array('i')`` of ids, read in place (no Python int per id: a search's hits)."""
        cdef Py_ssize_t k, total = 0
        cdef int i
        cdef uint64_t* mask = self._mask
        for k in range(ids.shape[0]):
            i = ids[k]
            if i < 0:
                _id(i, "only[]", -1)  # raises as for any other iterable
            if i < self._cap and not _bit(mask, i) and _matches(self, f, i):
                mask[i >> 6] |= (<uint64_t>1) << (i & 63)
                total += 1
        return total

    cdef object _mask_for(self, Filter* f, object category, object min_price, object max_price,
                          object in_stock, object only):
        self._filter(f, category, min_price, max_price, in_stock)
        cdef object sub = None
        if category is not None:
            sub = self._tree.subtree_mask(category)
            if sub is None:
                if only is not None:
                    for v in only:
                        _id(v, "only[]", -1)
                if self._cap:
                    memset(self._mask, 0, ((self._cap + 63) >> 6) * sizeof(uint64_t))
                return None
            sub = b"\0" + sub  # index slot + 1, so that "no category" (-1) reads 0
            f.sub = <const unsigned char*><bytes>sub
            f.sublen = len(<bytes>sub)
        return sub  # keeps f.sub alive

    cdef _Cached _cached(self, Filter* f, object sub, object category, object min_price, object max_price):
        """The matches of ``f`` from the cache, or scanned and cached (least recently used dropped)."""
        key = (category, min_price, max_price, f.stock)
        cdef _Cached c
        cdef Py_ssize_t k, nwords = (self._cap + 63) >> 6
        for k in range(len(self._cache)):
            c = self._cache[k]
            if c.key == key:
                if k != len(self._cache) - 1:
                    del self._cache[k]
                    self._cache.append(c)
                return c
        c = _Cached()
        c.words = <uint64_t*>malloc(max(nwords, 1) * sizeof(uint64_t))
        if c.words is NULL:
            raise MemoryError()
        c.total = self._scan(f, None)
        if nwords:
            memcpy(c.words, self._mask, nwords * sizeof(uint64_t))
        c.key, c.sub, c.filter = key, sub, f[0]
        self._cache.append(c)
        if len(self._cache) > CACHED_FILTERS:
            del self._cache[0]
        return c

    def query(self, sort="name", offset=0, limit=50, *, category=None, min_price=None, max_price=None,
              in_stock=None, only=None):
        """(ids of the page in order, total of the filter): the SQL list's page and count."""
        if not isinstance(sort, str) or sort not in _SORTS:
            raise ValueError(f"sort must be one of {', '.join(_SORTS)}, got {sort!r}")
        cdef Py_ssize_t off = _count_arg(offset, "offset"), lim = _count_arg(limit, "limit")
        cdef Filter f
        sub = self._mask_for(&f, category, min_price, max_price, in_stock, only)
        if category is not None and sub is None:
            return [], 0
        cdef Py_ssize_t total
        cdef const uint64_t* mask
        cdef _Cached hit
        if only is None:
            hit = self._cached(&f, sub, category, min_price, max_price)
            mask, total = hit.words, hit.total
        else:
            mask, total = self._mask, self._scan(&f, only)
        if lim == 0 or off >= total:
            return [], total
        cdef Py_ssize_t want = min(lim, total - off)
        cdef Py_ssize_t got = 0, skip = off, n = self._n, np = self._n_priced
        cdef int32_t* out = <int32_t*>malloc(want * sizeof(int32_t))
        if out is NULL:
            raise MemoryError()
        try:
            if sort == "name":
                got = _walk(mask, self._by_name, 0, n, False, &skip, out, got, want)
            elif sort == "-name":
                got = _walk(mask, self._by_name, 0, n, True, &skip, out, got, want)
            elif sort == "price":
                got = _walk(mask, self._by_price, 0, n, False, &skip, out, got, want)
            elif sort == "-price":  # price DESC NULLS LAST, id DESC: each part read backwards
                got = _walk(mask, self._by_price, 0, np, True, &skip, out, got, want)
                got = _walk(mask, self._by_price, np, n, True, &skip, out, got, want)
            else:
                got = _walk(mask, self._by_created, 0, n, True, &skip, out, got, want)
            if got != want:
                raise AssertionError(f"CatalogIndex: walked {got} of {want} ids")  # a broken invariant
            return [out[k] for k in range(want)], total
        finally:
            free(out)

    def count(self, *, category=None, min_price=None, max_price=None, in_stock=None, only=None):
        """The total of a filter without a page."""
        cdef Filter f
        sub = self._mask_for(&f, category, min_price, max_price, in_stock, only)
        if category is not None and sub is None:
            return 0
        return self._scan(&f, only)

    def category_counts(self):
        """repo.CATEGORIES' product_count for every active category."""
        cdef Py_ssize_t nslots = len(self._tree), i
        cdef int64_t* own = <int64_t*>malloc(max(nslots, 1) * sizeof(int64_t))
        cdef int32_t c
        if own is NULL:
            raise MemoryError()
        try:
            memset(own, 0, max(nslots, 1) * sizeof(int64_t))
            for i in range(self._cap):
                if self._flags[i] & ACTIVE:
                    c = self._cat[i]
                    if c >= 0:
                        own[c] += 1
            counts = [own[i] for i in range(nslots)]
        finally:
            free(own)
        return self._tree.totals(counts)

    def facets(self, *, category=None, min_price=None, max_price=None, in_stock=None, only=None,
               price_bounds=()):
        """Counts per child category, price bucket and stock state, each under the other filters."""
        cdef list bounds = [check_int64(b, f"price_bounds[{k}]") for k, b in enumerate(price_bounds)]
        if any(bounds[k] >= bounds[k + 1] for k in range(len(bounds) - 1)):
            raise ValueError("price_bounds must be strictly ascending")
        heads, members = self._tree.facet_groups(None if category is None else check_id(category, "category"))
        cdef Filter base, f
        sub = self._mask_for(&base, category, None, None, None, only)
        cdef Py_ssize_t total = 0
        if not (category is not None and sub is None):
            total = self._scan(&base, only)
        self._filter(&f, None, min_price, max_price, in_stock)
        cdef Py_ssize_t nb = len(bounds), nh = len(heads), nslots = len(members), k
        cdef Facets* out = <Facets*>calloc(1, sizeof(Facets))
        if out is NULL:
            raise MemoryError()
        try:
            out.bounds = <int64_t*>calloc(nb + 1, sizeof(int64_t))
            out.buckets = <int64_t*>calloc(nb + 1, sizeof(int64_t))
            out.per_slot = <int64_t*>calloc(nslots + 1, sizeof(int64_t))
            if out.bounds is NULL or out.buckets is NULL or out.per_slot is NULL:
                raise MemoryError()
            out.nb = nb
            for k in range(nb):
                out.bounds[k] = bounds[k]
            if total:
                _count_facets(self._flags, self._cat, self._price, self._cap, self._mask, &f, out)
            # Per slot, then per facet: a product counts in every facet whose subtree holds its slot.
            cats = [0] * nh
            for k in range(nslots):
                if out.per_slot[k + 1]:
                    for j in members[k]:
                        cats[j] += out.per_slot[k + 1]
            return {
                "categories": list(zip(heads, cats)),
                "prices": [out.buckets[k] for k in range(nb + 1)],
                "no_price": out.no_price,
                "in_stock": out.stocked,
                "out_of_stock": out.unstocked,
            }
        finally:
            free(out.bounds)
            free(out.buckets)
            free(out.per_slot)
            free(out)


cdef void _release(CatalogIndex self) noexcept:
    free(self._flags)
    free(self._cat)
    free(self._price)
    free(self._created)
    free(self._rank)
    free(self._by_name)
    free(self._by_price)
    free(self._by_created)
    free(self._mask)
    free(self._act)
    free(self._stk)
    self._act = self._stk = NULL
    self._flags = NULL
    self._cat = self._by_name = self._by_price = self._by_created = NULL
    self._price = self._created = self._rank = NULL
    self._mask = NULL
    self._cap = self._n = self._pcap = self._n_priced = self._n_active = 0


cdef Py_ssize_t _count_arg(object v, str name) except -1:
    if type(v) is bool or not PyLong_Check(v):
        raise TypeError(f"{name}: expected int, got {type(v).__name__}")
    if v < 0:
        raise ValueError(f"{name} = {v}: must be >= 0")
    return v if v < 2**62 else 2**62
