# The C kernels of the compiled CatalogIndex: the loops over a million ids, free of Python objects.
# Inline functions in a .pxd are compiled into the module that cimports them (_catalog.pyx), so this split
# costs no call across modules and adds no extension module. Flag bits (see _catalog.pyx): 1 PRESENT,
# 2 ACTIVE, 4 IN_STOCK, 8 HAS_PRICE.

from libc.stdint cimport INT64_MAX, INT64_MIN, int32_t, int64_t, uint64_t
from libc.string cimport memmove


cdef struct Filter:
    const unsigned char* sub    # one byte per category slot + 1: 1 = in the filtered subtree (NULL: no filter)
    Py_ssize_t sublen
    bint use_lo
    bint use_hi
    int64_t lo
    int64_t hi
    int stock                   # -1: any, 0: stock <= 0, 1: stock > 0


ctypedef struct KeyId:
    int64_t key
    int32_t id


cdef inline int _cmp_key_id(const void* a, const void* b) noexcept nogil:
    cdef const KeyId* x = <const KeyId*>a
    cdef const KeyId* y = <const KeyId*>b
    if x.key != y.key:
        return -1 if x.key < y.key else 1
    return (x.id > y.id) - (x.id < y.id)


cdef inline Py_ssize_t _lower(const int32_t* perm, Py_ssize_t lo, Py_ssize_t hi, const int64_t* keys,
                       int64_t k, int32_t i) noexcept nogil:
    """First position in [lo, hi) whose (keys[id], id) is >= (k, i); by id alone when keys is NULL."""
    cdef Py_ssize_t mid
    cdef int32_t j
    cdef bint less
    while lo < hi:
        mid = (lo + hi) >> 1
        j = perm[mid]
        if keys is NULL:
            less = j < i
        else:
            less = keys[j] < k or (keys[j] == k and j < i)
        if less:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void _remove_at(int32_t* perm, Py_ssize_t n, Py_ssize_t pos) noexcept nogil:
    memmove(perm + pos, perm + pos + 1, (n - pos - 1) * sizeof(int32_t))


cdef inline void _insert_at(int32_t* perm, Py_ssize_t n, Py_ssize_t pos, int32_t i) noexcept nogil:
    memmove(perm + pos + 1, perm + pos, (n - pos) * sizeof(int32_t))
    perm[pos] = i


cdef inline bint _bit(const uint64_t* mask, Py_ssize_t i) noexcept nogil:
    return (mask[i >> 6] >> (i & 63)) & 1


cdef extern from *:
    int __builtin_popcountll(unsigned long long) nogil
    int __builtin_ctzll(unsigned long long) nogil


ctypedef struct Facets:
    Py_ssize_t nb
    int64_t* bounds     # nb ascending bucket bounds
    int64_t* buckets    # nb + 1 counts
    int64_t* per_slot   # 1 + slots: [0] for products without a category
    int64_t no_price
    int64_t stocked
    int64_t unstocked


cdef inline void _count_facets(const unsigned char* flags, const int32_t* cat, const int64_t* price, Py_ssize_t cap,
                        const uint64_t* mask, const Filter* f, Facets* out) noexcept nogil:
    """Facet counts over the marked ids, visiting set bits only; no data-dependent branch per id."""
    cdef Py_ssize_t w, i, k, lo, hi, mid, nb = out.nb
    cdef uint64_t word, has, price_ok, stock_ok, stocked
    cdef int64_t p
    cdef unsigned char fl
    cdef bint use_price = f.use_lo or f.use_hi
    cdef bint use_stock = f.stock >= 0
    cdef uint64_t want_stock = 1 if f.stock > 0 else 0
    cdef int64_t plo = f.lo if f.use_lo else INT64_MIN
    cdef int64_t phi = f.hi if f.use_hi else INT64_MAX
    cdef const int64_t* bounds = out.bounds
    cdef int64_t* buckets = out.buckets
    cdef int64_t* per_slot = out.per_slot
    cdef int64_t no_price = 0, n_stocked = 0, n_unstocked = 0
    for w in range((cap + 63) >> 6):
        word = mask[w]
        while word:
            i = (w << 6) + __builtin_ctzll(word)
            word &= word - 1
            fl = flags[i]
            has = (fl >> 3) & 1
            stocked = (fl >> 2) & 1
            p = price[i]
            price_ok = has & (p >= plo) & (p <= phi) if use_price else 1
            stock_ok = ~(stocked ^ want_stock) & 1 if use_stock else 1
            per_slot[cat[i] + 1] += price_ok & stock_ok
            if nb <= 16:
                lo = 0
                for k in range(nb):
                    lo += bounds[k] <= p
            else:
                lo, hi = 0, nb
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if bounds[mid] <= p:
                        lo = mid + 1
                    else:
                        hi = mid
            buckets[lo] += stock_ok & has
            no_price += stock_ok & (has ^ 1)
            n_stocked += price_ok & stocked
            n_unstocked += price_ok & (stocked ^ 1)
    out.no_price = no_price
    out.stocked = n_stocked
    out.unstocked = n_unstocked


cdef inline Py_ssize_t _walk(const uint64_t* mask, const int32_t* perm, Py_ssize_t lo, Py_ssize_t hi,
                      bint backward, Py_ssize_t* skip, int32_t* out, Py_ssize_t got, Py_ssize_t want) noexcept nogil:
    """Copy to ``out[got:want]`` the marked ids of perm[lo:hi] (read backwards or not) after ``skip`` of them.

    Branch-free in the id test: a sparse filter makes that test a coin toss the CPU cannot predict.
    """
    cdef Py_ssize_t pos = hi - 1 if backward else lo
    cdef Py_ssize_t step = -1 if backward else 1
    cdef Py_ssize_t end = lo - 1 if backward else hi
    cdef Py_ssize_t s = skip[0]
    cdef int32_t i
    while s and pos != end:
        s -= _bit(mask, perm[pos])
        pos += step
    skip[0] = s
    if s:
        return got
    while got < want and pos != end:
        i = perm[pos]
        out[got] = i
        got += _bit(mask, i)
        pos += step
    return got


cdef inline Py_ssize_t _scan_words(const uint64_t* act, const uint64_t* stk, Py_ssize_t cap, int stock,
                            uint64_t* mask) noexcept nogil:
    """The matches of a filter on activity and stock alone, 64 ids per step; their number."""
    cdef Py_ssize_t w, total = 0
    cdef uint64_t word
    for w in range((cap + 63) >> 6):
        word = act[w]
        if stock > 0:
            word &= stk[w]
        elif stock == 0:
            word &= ~stk[w]
        mask[w] = word
        total += __builtin_popcountll(word)
    return total


cdef inline Py_ssize_t _scan_all(const unsigned char* flags, const int32_t* cat, const int64_t* price,
                          Py_ssize_t cap, const Filter* f, uint64_t* mask) noexcept nogil:
    """Mark every id passing ``f``, 64 ids per mask word, without a data-dependent branch; their number."""
    cdef Py_ssize_t w, b, i, n, total = 0
    cdef uint64_t word, ok
    cdef unsigned char fl
    cdef int32_t c
    cdef int64_t p
    cdef bint use_stock = f.stock >= 0
    cdef bint use_price = f.use_lo or f.use_hi
    cdef uint64_t want_stock = 1 if f.stock > 0 else 0
    cdef int64_t lo = f.lo if f.use_lo else INT64_MIN
    cdef int64_t hi = f.hi if f.use_hi else INT64_MAX
    cdef const unsigned char* sub = f.sub
    cdef Py_ssize_t sublen = f.sublen
    for w in range((cap + 63) >> 6):
        word = 0
        i = w << 6
        n = min(64, cap - i)
        for b in range(n):
            fl = flags[i + b]
            ok = (fl >> 1) & 1  # ACTIVE
            if use_stock:
                ok &= ~((fl >> 2) ^ want_stock) & 1  # IN_STOCK
            if sub is not NULL:
                # sub[0] is 0 and stands for "no category" (slot -1); slots always fit the table.
                c = cat[i + b] + 1
                if c < sublen:
                    ok &= sub[c]
                else:
                    ok = 0
            if use_price:
                p = price[i + b]
                ok &= ((fl >> 3) & 1) & (p >= lo) & (p <= hi)  # HAS_PRICE
            word |= ok << b
        mask[w] = word
        total += __builtin_popcountll(word)
    return total
