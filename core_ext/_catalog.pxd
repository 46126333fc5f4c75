# Layout of the compiled CatalogIndex (see _catalog_py.py for the design; both builds share it).

from libc.stdint cimport int32_t, int64_t, uint64_t

from core_ext._catalog_kernels cimport Filter


cdef class _Cached:
    cdef object key             # (category, min_price, max_price, stock)
    cdef object sub             # keeps filter.sub alive
    cdef Filter filter
    cdef uint64_t* words
    cdef Py_ssize_t total


cdef class CatalogIndex:
    cdef list _cache            # _Cached, least recently used first
    cdef object _tree           # core_ext._catalog_tree.CategoryTree
    cdef dict _slots            # the tree's {category id: slot}, read directly on the hot paths
    cdef Py_ssize_t _cap        # product id slots allocated in every column
    cdef Py_ssize_t _n          # present products = length of each ordering
    cdef Py_ssize_t _pcap       # capacity of each ordering
    cdef Py_ssize_t _n_priced   # priced products, the head of _by_price
    cdef Py_ssize_t _n_active
    cdef unsigned char* _flags  # PRESENT | ACTIVE | IN_STOCK | HAS_PRICE
    cdef int32_t* _cat          # category slot, -1 for none
    cdef int64_t* _price        # cents (meaningful with HAS_PRICE)
    cdef int64_t* _created      # µs
    cdef int64_t* _rank         # name rank
    cdef int32_t* _by_name      # (rank, id) ascending
    cdef int32_t* _by_price     # (price, id) ascending for priced ids, then the unpriced by id
    cdef int32_t* _by_created   # (created, id) ascending
    cdef uint64_t* _mask        # scratch bitset over ids: the matches of the last scan
    cdef uint64_t* _act         # bitset: ACTIVE (so filters without category or price need no per-id pass)
    cdef uint64_t* _stk         # bitset: IN_STOCK

    cdef int _grow(self, Py_ssize_t i) except -1
    cdef int _reserve(self, Py_ssize_t n) except -1
    cdef void _store(self, int32_t i, int32_t cat, bint has_price, int64_t price, bint stock,
                     int64_t created, int64_t rank, bint on) noexcept
    cdef void _unlink(self, int32_t i, bint name, bint price, bint created) noexcept
    cdef void _link(self, int32_t i, bint name, bint price, bint created) noexcept
    cdef int _apply(self, int32_t i, int32_t cat, bint has_price, int64_t price, bint stock,
                    int64_t created, int64_t rank, bint on) except -1
    cdef int _sort_all(self, bint name_only=*) except -1
    cdef Py_ssize_t _rank_end(self, Py_ssize_t start, int64_t hi) noexcept
    cdef int _filter(self, Filter* f, object category, object min_price, object max_price,
                     object in_stock) except -1
    cdef Py_ssize_t _scan(self, Filter* f, object only) except -1
    cdef Py_ssize_t _scan_ints(self, Filter* f, const int[::1] ids) except -1
    cdef void _set_bits(self, int32_t i, bint on, bint stock) noexcept
    cdef void _recheck(self, int32_t i) noexcept
    cdef _Cached _cached(self, Filter* f, object sub, object category, object min_price, object max_price)
    cdef object _mask_for(self, Filter* f, object category, object min_price, object max_price,
                          object in_stock, object only)
