# Declarations shared with _pages.pyx, which tests image bits without any Python call.

cdef class _Bitset:
    cdef unsigned char* data
    cdef Py_ssize_t nbytes
    cdef Py_ssize_t count
    cdef str fingerprint

    cdef void seal(self)


from libc.stdint cimport int32_t, uint32_t


cdef class _Names:
    cdef char* arena
    cdef uint32_t* offsets
    cdef int32_t* ids
    cdef Py_ssize_t n
    cdef Py_ssize_t nbits
    cdef Py_ssize_t nbytes

    cdef long long find(self, const char* name, Py_ssize_t size) noexcept


cdef class ImageIndex:
    cdef str _folder
    cdef bytes _folder_b
    cdef double _interval
    cdef _Bitset _bits
    cdef _Names _names
    cdef double _last_check
    cdef object _scan_mtime
    cdef bint _racy

    cdef object _stat_mtime(self)
    cdef bint _rescan(self, object wall, object mtime) except -1
    cdef _Bitset _scan(self, _Names names)
    cdef tuple _updated(self, _Names added, list wanted, _Names old, _Bitset prior)


cdef inline bint bitset_test(_Bitset bits, long long i) noexcept:
    return 0 <= i < bits.nbytes * 8 and (bits.data[i >> 3] >> (i & 7)) & 1
