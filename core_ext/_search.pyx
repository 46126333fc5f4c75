# cython: autotestdict=False
"""Compiled ``SearchIndex``: substring search over one UTF-8 text per product, in one C buffer.

Same layout, API and answers as ``_search_py`` (read its docstring). The scan is ``_find`` below: on x86-64
it compares the term's first and last bytes at 16 positions at once (SSE2, part of every x86-64 CPU) and
checks the middle only where both match, several times faster than glibc's memmem on catalog text;
elsewhere it is memmem. Memory comes from PyMem_Raw* (traced by tracemalloc, like ``_catalog``).
"""

cimport cython
from cpython.array cimport array as carray
from cpython.array cimport clone
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_RawFree as free
from cpython.mem cimport PyMem_RawRealloc as realloc
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memset

from array import array as _array

from core_ext._catalog_tree import check_id

cdef extern from *:
    """
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    /* First occurrence of needle (k >= 1 bytes) in s[0..n), or NULL. With SSE2, candidates are the
       positions where the needle's bytes at offsets p < q (its two rarest, chosen by the caller) match,
       16 positions at a time; each is then compared in full. */
    static const char* core_ext_search_find(const char* s, size_t n, const char* needle, size_t k,
                                            size_t p, size_t q) {
        if (k > n) return NULL;
        if (k == 1) return (const char*)memchr(s, (unsigned char)needle[0], n);
    #if defined(__SSE2__)
        {
            const __m128i first = _mm_set1_epi8(needle[p]);
            const __m128i second = _mm_set1_epi8(needle[q]);
            size_t i = 0;
            for (; i + k - 1 + 16 <= n; i += 16) {
                __m128i a = _mm_loadu_si128((const __m128i*)(s + i + p));
                __m128i b = _mm_loadu_si128((const __m128i*)(s + i + q));
                unsigned mask = (unsigned)_mm_movemask_epi8(
                    _mm_and_si128(_mm_cmpeq_epi8(first, a), _mm_cmpeq_epi8(second, b)));
                while (mask) {
                    unsigned bit = (unsigned)__builtin_ctz(mask);
                    if (memcmp(s + i + bit, needle, k) == 0) return s + i + bit;
                    mask &= mask - 1;
                }
            }
            for (; i + k <= n; i++) {
                if (s[i + p] == needle[p] && memcmp(s + i, needle, k) == 0) return s + i;
            }
            return NULL;
        }
    #else
        (void)p; (void)q;
        return (const char*)memmem(s, n, needle, k);
    #endif
    }
    """
    const char* _find "core_ext_search_find"(
        const char* s, size_t n, const char* needle, size_t k, size_t p, size_t q) nogil

cdef enum:
    SEP = 0x1e
    # Compaction waits for this many dead bytes at least (a few renames never copy the buffer).
    COMPACT_MIN_BYTES = 65536

cdef carray _INTS = _array("i")
cdef long long _C_MAX_ID = 2147483647


cdef bytes _text(object value, str what):
    if not PyBytes_Check(value):
        raise TypeError(f"{what}: expected bytes, got {type(value).__name__}")
    if memchr(PyBytes_AS_STRING(value), SEP, PyBytes_GET_SIZE(value)) != NULL:
        raise ValueError(f"{what}: a text cannot hold the separator byte 0x1e")
    return <bytes>value


@cython.auto_pickle(False)
cdef class SearchIndex:
    """Which products' texts contain a term: one buffer of texts, scanned in C."""

    cdef char* _buf
    cdef int64_t _len, _cap
    cdef int64_t* _starts
    cdef int32_t* _owners
    cdef Py_ssize_t _nrec, _reccap
    cdef int32_t* _records
    cdef Py_ssize_t _nids
    cdef int64_t _dead
    # How often each byte value was added to the buffer (never decremented but by compaction: a guide for
    # choosing which of a term's bytes to scan for, not part of any answer).
    cdef uint64_t _freq[256]
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t compactions

    def __cinit__(self):
        self._buf = NULL
        self._starts = NULL
        self._owners = NULL
        self._records = NULL
        self._len = self._cap = 0
        memset(self._freq, 0, sizeof(self._freq))
        self._nrec = self._reccap = 0
        self._nids = 0
        self._dead = 0
        self.count = 0
        self.compactions = 0

    def __dealloc__(self):
        free(self._buf)
        free(self._starts)
        free(self._owners)
        free(self._records)

    def __len__(self):
        return self.count

    def __contains__(self, product_id):
        return self._record_of(product_id) >= 0

    @property
    def memory_bytes(self):
        """Bytes held: the buffer and the three arrays (allocated capacity)."""
        return self._cap + 12 * self._reccap + 4 * self._nids

    @property
    def dead_bytes(self):
        """Bytes of dead records in the buffer (reclaimed by compaction)."""
        return self._dead

    cdef Py_ssize_t _record_of(self, object product_id):
        cdef long long i
        if type(product_id) is not int:
            if isinstance(product_id, bool) or not isinstance(product_id, int):
                return -1
        if product_id < 0 or product_id >= self._nids:
            return -1
        i = product_id
        return self._records[i]

    cdef inline int64_t _end(self, Py_ssize_t r) noexcept:
        # Where record r's SEP is.
        return (self._starts[r + 1] if r + 1 < self._nrec else self._len) - 1

    def get(self, product_id):
        """The text of a product, or None."""
        cdef Py_ssize_t r = self._record_of(product_id)
        if r < 0:
            return None
        return PyBytes_FromStringAndSize(self._buf + self._starts[r], self._end(r) - self._starts[r])

    def set(self, product_id, text):
        """Give a product its text (replacing any; the same text again changes nothing)."""
        self.set_many((product_id,), (text,))

    def set_many(self, ids, texts):
        """set() each pair (a load of many products at once). Checked first: on an error nothing changes."""
        ids = PySequence_Fast(ids, "ids must be a sequence")
        texts = PySequence_Fast(texts, "texts must be a sequence")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(ids), k
        if PySequence_Fast_GET_SIZE(texts) != n:
            raise ValueError(f"ids and texts differ in length ({n} != {PySequence_Fast_GET_SIZE(texts)})")
        cdef long long top = -1, pid
        cdef int64_t need = 0
        cdef object item, text_item
        for k in range(n):
            item = <object>PySequence_Fast_GET_ITEM(ids, k)
            # The common case checked inline; check_id and _text (with the element's name) only to raise.
            if type(item) is int and 0 <= item <= _C_MAX_ID:
                pid = item
            else:
                pid = check_id(item, f"ids[{k}]")
            text_item = <object>PySequence_Fast_GET_ITEM(texts, k)
            if not PyBytes_Check(text_item) or memchr(
                    PyBytes_AS_STRING(text_item), SEP, PyBytes_GET_SIZE(text_item)) != NULL:
                _text(text_item, f"texts[{k}]")
            need += PyBytes_GET_SIZE(text_item) + 1
            if pid > top:
                top = pid
        self._reserve(top + 1, self._nrec + n, self._len + need)
        cdef bytes text
        cdef Py_ssize_t old, size
        for k in range(n):
            pid = <object>PySequence_Fast_GET_ITEM(ids, k)
            text = <bytes>PySequence_Fast_GET_ITEM(texts, k)
            size = PyBytes_GET_SIZE(text)
            old = self._records[pid]
            if old >= 0:
                if (self._end(old) - self._starts[old] == size
                        and memcmp(self._buf + self._starts[old], PyBytes_AS_STRING(text), size) == 0):
                    continue
                self._kill(old)
            else:
                self.count += 1
            self._records[pid] = <int32_t>self._nrec
            self._starts[self._nrec] = self._len
            self._owners[self._nrec] = <int32_t>pid
            self._nrec += 1
            memcpy(self._buf + self._len, PyBytes_AS_STRING(text), size)
            self._count_bytes(self._buf + self._len, size)
            self._buf[self._len + size] = SEP
            self._len += size + 1
        self._maybe_compact()

    cdef int _reserve(self, Py_ssize_t nids, Py_ssize_t nrec, int64_t nbytes) except -1:
        # Room for ids below nids, nrec records and nbytes of buffer; grows by half again at least.
        cdef void* p
        cdef Py_ssize_t cap
        cdef int64_t bcap
        if nids > self._nids:
            p = realloc(self._records, nids * sizeof(int32_t))
            if p == NULL:
                raise MemoryError()
            self._records = <int32_t*>p
            memset(self._records + self._nids, 0xff, (nids - self._nids) * sizeof(int32_t))
            self._nids = nids
        if nrec > self._reccap:
            cap = max(nrec, self._reccap + self._reccap // 2, 1024)
            p = realloc(self._starts, cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            self._starts = <int64_t*>p
            p = realloc(self._owners, cap * sizeof(int32_t))
            if p == NULL:
                raise MemoryError()
            self._owners = <int32_t*>p
            self._reccap = cap
        if nbytes > self._cap:
            bcap = max(nbytes, self._cap + self._cap // 2, 65536)
            p = realloc(self._buf, bcap)
            if p == NULL:
                raise MemoryError()
            self._buf = <char*>p
            self._cap = bcap
        return 0

    def trim(self):
        """Give back the growth room of the buffer and the arrays (after a load)."""
        cdef void* p
        if self._cap > self._len and self._len > 0:
            p = realloc(self._buf, self._len)
            if p != NULL:
                self._buf, self._cap = <char*>p, self._len
        if self._reccap > self._nrec and self._nrec > 0:
            p = realloc(self._starts, self._nrec * sizeof(int64_t))
            if p != NULL:
                self._starts = <int64_t*>p
                p = realloc(self._owners, self._nrec * sizeof(int32_t))
                if p != NULL:
                    self._owners = <int32_t*>p
                self._reccap = self._nrec  # (owners left larger if that failed: harmless)

    def remove(self, product_id):
        """Forget a product's text (nothing if it has none)."""
        cdef long long pid = check_id(product_id, "product_id")
        cdef Py_ssize_t r = self._record_of(product_id)
        if r >= 0:
            self._kill(r)
            self._records[pid] = -1
            self.count -= 1
            self._maybe_compact()

    cdef void _count_bytes(self, const char* p, int64_t size) noexcept:
        cdef int64_t i
        for i in range(size):
            self._freq[<unsigned char>p[i]] += 1

    cdef void _kill(self, Py_ssize_t r) noexcept:
        self._owners[r] = -1
        self._dead += self._end(r) + 1 - self._starts[r]

    cdef int _maybe_compact(self) except -1:
        if self._dead >= COMPACT_MIN_BYTES and 3 * self._dead > self._len:
            self.compact()
        return 0

    def compact(self):
        """Copy the live records into a new buffer (in their order), dropping the dead ones."""
        cdef int64_t nbytes = self._len - self._dead, at = 0, size
        cdef char* buf = <char*>realloc(NULL, max(nbytes, 1))
        if buf == NULL:
            raise MemoryError()
        cdef Py_ssize_t r, w = 0
        cdef int32_t owner
        for r in range(self._nrec):
            owner = self._owners[r]
            if owner < 0:
                continue
            size = self._end(r) + 1 - self._starts[r]
            memcpy(buf + at, self._buf + self._starts[r], size)
            self._starts[w] = at
            self._owners[w] = owner
            self._records[owner] = <int32_t>w
            at += size
            w += 1
        free(self._buf)
        self._buf, self._len, self._cap = buf, at, max(nbytes, 1)
        memset(self._freq, 0, sizeof(self._freq))
        self._count_bytes(buf, at)
        self._nrec = w
        self._dead = 0
        self.compactions += 1

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def search(self, term):
        """Ids of the products whose text contains `term` (each once), in the buffer's order ('i' array)."""
        if not PyBytes_Check(term):
            raise TypeError(f"term: expected bytes, got {type(term).__name__}")
        cdef const char* needle = PyBytes_AS_STRING(term)
        cdef size_t k = PyBytes_GET_SIZE(term)
        cdef Py_ssize_t n = self._nrec, r = 0, lo, hi, mid, step, found = 0, cap = 0
        cdef int32_t* out = NULL
        cdef int32_t* grown
        cdef int32_t owner
        cdef const char* buf = self._buf
        cdef const char* hit
        cdef int64_t at = 0, pos
        cdef carray result
        cdef size_t p = 0, q = 0, i
        if k > 0 and memchr(needle, SEP, k) != NULL:
            return clone(_INTS, 0, False)
        if k > 1:
            # Scan for the term's two rarest bytes (in the buffer's counts), at distinct offsets p < q.
            for i in range(1, k):
                if self._freq[<unsigned char>needle[i]] < self._freq[<unsigned char>needle[p]]:
                    p = i
            # The other: the next rarest; among equals the farthest from p (bytes next to each other are
            # often alike: "00" in SKUs).
            q = 1 if p == 0 else 0
            for i in range(k):
                if i == p:
                    continue
                if (self._freq[<unsigned char>needle[i]] < self._freq[<unsigned char>needle[q]]
                        or (self._freq[<unsigned char>needle[i]] == self._freq[<unsigned char>needle[q]]
                            and abs(<Py_ssize_t>i - <Py_ssize_t>p) > abs(<Py_ssize_t>q - <Py_ssize_t>p))):
                    q = i
            if q < p:
                p, q = q, p
        try:
            if k == 0:
                out = <int32_t*>realloc(NULL, max(self.count, 1) * sizeof(int32_t))
                if out == NULL:
                    raise MemoryError()
                for r in range(n):
                    if self._owners[r] >= 0:
                        out[found] = self._owners[r]
                        found += 1
            else:
                with nogil:
                    while at < self._len:
                        hit = _find(buf + at, self._len - at, needle, k, p, q)
                        if hit == NULL:
                            break
                        pos = hit - buf
                        # The hit's record: gallop forward from the last one (hits come in order).
                        step = 1
                        lo = r
                        hi = r + 1
                        while hi < n and self._starts[hi] <= pos:
                            lo = hi
                            hi = hi + step
                            step *= 2
                        if hi > n:
                            hi = n
                        while hi - lo > 1:  # starts[lo] <= pos < starts[hi] (or hi == n)
                            mid = (lo + hi) // 2
                            if self._starts[mid] <= pos:
                                lo = mid
                            else:
                                hi = mid
                        r = lo
                        owner = self._owners[r]
                        if owner >= 0:
                            if found == cap:
                                cap = cap * 2 if cap else 1024
                                grown = <int32_t*>realloc(out, cap * sizeof(int32_t))
                                if grown == NULL:
                                    with gil:
                                        raise MemoryError()
                                out = grown
                            out[found] = owner
                            found += 1
                        r += 1
                        if r >= n:
                            break
                        at = self._starts[r]
            result = clone(_INTS, found, False)
            if found:
                memcpy(result.data.as_voidptr, out, found * sizeof(int32_t))
            return result
        finally:
            free(out)
