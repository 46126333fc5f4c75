# cython: autotestdict=False
"""Compiled ``ImageIndex``: a bitset over dense product ids, rebuilt from ``{zoho_item_id}.jpg`` names.

The catalog's names are kept as file-name bytes in one sorted arena with an offsets and an ids array
(``_Names``, ~8 B per product plus the name), looked up by binary search: a dict of 1M bytes keys held
~110 MB.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc cimport errno as c
from libc.errno cimport ENOENT, ENOTDIR
from libc.stdint cimport int32_t, uint32_t, UINT32_MAX
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memchr, memcmp, memcpy, strlen, strncmp
from posix.fcntl cimport AT_SYMLINK_NOFOLLOW
from posix.stat cimport S_ISLNK, S_ISREG, fstatat, lstat, stat, struct_stat
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

import hashlib
import math
import operator
import os
from collections.abc import Mapping

from core_ext._images_py import MAX_DENSE_ID as _MAX_DENSE_ID
from core_ext._images_py import RACY_WINDOW_NS as _RACY_WINDOW_NS


cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR
    struct dirent:
        unsigned char d_type
        char d_name[256]
    DIR* opendir(const char* name)
    dirent* readdir(DIR* d)
    int closedir(DIR* d)
    int dirfd(DIR* d)
    enum: DT_UNKNOWN
    enum: DT_REG
    enum: DT_LNK


cdef extern from "<stdlib.h>" nogil:
    char* realpath(const char* path, char* resolved)

cdef extern from "<unistd.h>" nogil:
    Py_ssize_t readlinkat(int dirfd, const char* path, char* buf, size_t size)

cdef extern from "<limits.h>":
    enum: PATH_MAX


cdef bint _link_is_served(bytes link, bytes prefix):
    """Whether a symlink resolves to a regular file inside the folder (``prefix`` = its real path + "/")."""
    cdef char* real = realpath(PyBytes_AS_STRING(link), NULL)
    cdef struct_stat st
    cdef bint ok
    if real is NULL:
        return False  # dangling, a loop, or a component that is not a folder
    try:
        ok = (
            strncmp(real, PyBytes_AS_STRING(prefix), len(prefix)) == 0
            and stat(real, &st) == 0
            and S_ISREG(st.st_mode)
        )
    finally:
        free(real)
    return ok


cdef inline double _monotonic() noexcept:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef inline object _wall_ns():
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline long long _as_index(object value) except? -2:
    """Dense id as a C integer, or -1 for ids no bitset can hold (negative or beyond 64 bits)."""
    cdef int overflow = 0
    cdef long long i
    if type(value) is not int:
        value = operator.index(value)
    i = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        return -1
    return i if i >= 0 else -1


@cython.auto_pickle(False)
@cython.final
cdef class _Bitset:
    """One immutable scan result; swapped into ``ImageIndex`` with a single pointer assignment."""

    def __cinit__(self, Py_ssize_t nbytes):
        # calloc(0) may return NULL legitimately, so always ask for at least one byte.
        self.data = <unsigned char*>calloc(nbytes if nbytes > 0 else 1, 1)
        if self.data is NULL:
            raise MemoryError()
        self.nbytes = nbytes
        self.count = 0
        self.fingerprint = ""

    def __dealloc__(self):
        free(self.data)

    cdef void seal(self):
        cdef Py_ssize_t n = self.nbytes
        # Trailing zero bytes are trimmed so the value depends on the set, not on the catalog's largest id.
        while n > 0 and self.data[n - 1] == 0:
            n -= 1
        payload = PyBytes_FromStringAndSize(<char*>self.data, n)
        self.fingerprint = hashlib.blake2b(payload, digest_size=16).hexdigest()


cdef inline int _compare(const char* a, Py_ssize_t alen, const char* b, Py_ssize_t blen) noexcept nogil:
    cdef int c = memcmp(a, b, alen if alen < blen else blen)
    if c != 0:
        return c
    return (alen > blen) - (alen < blen)


# qsort has no context argument: the arena being sorted, set while the GIL is held (set_catalog keeps it).
cdef const char* _sort_arena = NULL
cdef const uint32_t* _sort_offsets = NULL


cdef int _compare_entries(const void* pa, const void* pb) noexcept nogil:
    cdef Py_ssize_t a = (<const Py_ssize_t*>pa)[0]
    cdef Py_ssize_t b = (<const Py_ssize_t*>pb)[0]
    cdef int c = _compare(
        _sort_arena + _sort_offsets[a], _sort_offsets[a + 1] - _sort_offsets[a],
        _sort_arena + _sort_offsets[b], _sort_offsets[b + 1] - _sort_offsets[b],
    )
    if c != 0:
        return c
    return (a > b) - (a < b)  # equal names keep their input order: the last one given wins


cdef void* _grow(void* block, Py_ssize_t* capacity, Py_ssize_t needed, Py_ssize_t item) except NULL:
    """``block`` reallocated to hold at least ``needed`` items (capacity doubles); raises MemoryError."""
    cdef Py_ssize_t cap = capacity[0]
    cdef void* grown
    if needed <= cap and block is not NULL:
        return block
    while cap < needed:
        cap = cap * 2 if cap > 0 else 1024
    grown = PyMem_Realloc(block, cap * item)
    if grown is NULL:
        raise MemoryError()
    capacity[0] = cap
    return grown


@cython.auto_pickle(False)
@cython.final
cdef class _Names:
    """The catalog: file-name bytes sorted in one arena (name k is ``arena[offsets[k]:offsets[k + 1]]``)
    and the dense id of each; immutable once built, swapped in with a single assignment."""

    def __dealloc__(self):
        PyMem_Free(self.arena)
        PyMem_Free(self.offsets)
        PyMem_Free(self.ids)

    cdef long long find(self, const char* name, Py_ssize_t size) noexcept:
        """Dense id of ``name``, or -1."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        cdef int c
        while lo < hi:
            mid = (lo + hi) >> 1
            c = _compare(
                self.arena + self.offsets[mid], self.offsets[mid + 1] - self.offsets[mid], name, size
            )
            if c < 0:
                lo = mid + 1
            elif c > 0:
                hi = mid
            else:
                return self.ids[mid]
        return -1


cdef _Names _build_names(object mapping):
    """The catalog of a ``{name: dense id}`` mapping or an iterable of (name, dense id) pairs."""
    cdef char* raw = NULL
    cdef uint32_t* raw_offsets = NULL
    cdef int32_t* raw_ids = NULL
    cdef Py_ssize_t* order = NULL
    cdef Py_ssize_t raw_cap = 0, offsets_cap = 0, ids_cap = 0
    cdef Py_ssize_t n = 0, used = 0, size, k, kept, at
    cdef _Names names = _Names.__new__(_Names)
    global _sort_arena, _sort_offsets
    pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
    try:
        raw_offsets = <uint32_t*>_grow(raw_offsets, &offsets_cap, 1, sizeof(uint32_t))
        raw_offsets[0] = 0
        for key, value in pairs:
            if not isinstance(key, str):
                raise TypeError(f"catalog key {key!r}: expected str, got {type(key).__name__}")
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"catalog[{key!r}]: expected int, got {type(value).__name__}")
            if value < 0 or value > _MAX_DENSE_ID:
                raise ValueError(f"catalog[{key!r}] = {value}: dense id must be in 0..{_MAX_DENSE_ID}")
            try:
                # Kept as the raw file-name bytes so the scan looks names up without decoding them.
                stem = os.fsencode(key)
            except UnicodeEncodeError:
                continue  # a name no file system can hold never matches a file
            size = len(<bytes>stem)
            if <size_t>used + <size_t>size > UINT32_MAX:
                raise OverflowError("the catalog's names exceed 4 GiB")
            raw = <char*>_grow(raw, &raw_cap, used + size, 1)
            memcpy(raw + used, PyBytes_AS_STRING(stem), size)
            used += size
            raw_ids = <int32_t*>_grow(raw_ids, &ids_cap, n + 1, sizeof(int32_t))
            raw_ids[n] = <int32_t>value
            n += 1
            raw_offsets = <uint32_t*>_grow(raw_offsets, &offsets_cap, n + 1, sizeof(uint32_t))
            raw_offsets[n] = <uint32_t>used
        order = <Py_ssize_t*>PyMem_Malloc((n if n > 0 else 1) * sizeof(Py_ssize_t))
        if order is NULL:
            raise MemoryError()
        for k in range(n):
            order[k] = k
        _sort_arena = raw
        _sort_offsets = raw_offsets
        qsort(order, n, sizeof(Py_ssize_t), _compare_entries)
        _sort_arena = NULL
        _sort_offsets = NULL
        # Of equal names the last one given wins, as in a dict built from the pairs.
        kept = 0
        used = 0
        for k in range(n):
            if k + 1 < n and _compare(
                raw + raw_offsets[order[k]], raw_offsets[order[k] + 1] - raw_offsets[order[k]],
                raw + raw_offsets[order[k + 1]], raw_offsets[order[k + 1] + 1] - raw_offsets[order[k + 1]],
            ) == 0:
                continue
            used += raw_offsets[order[k] + 1] - raw_offsets[order[k]]
            order[kept] = order[k]
            kept += 1
        names.arena = <char*>PyMem_Malloc(used if used > 0 else 1)
        names.offsets = <uint32_t*>PyMem_Malloc((kept + 1) * sizeof(uint32_t))
        names.ids = <int32_t*>PyMem_Malloc((kept if kept > 0 else 1) * sizeof(int32_t))
        if names.arena is NULL or names.offsets is NULL or names.ids is NULL:
            raise MemoryError()
        at = 0
        names.offsets[0] = 0
        names.nbits = 0
        for k in range(kept):
            size = raw_offsets[order[k] + 1] - raw_offsets[order[k]]
            memcpy(names.arena + at, raw + raw_offsets[order[k]], size)
            at += size
            names.offsets[k + 1] = <uint32_t>at
            names.ids[k] = raw_ids[order[k]]
            if <Py_ssize_t>names.ids[k] + 1 > names.nbits:
                names.nbits = <Py_ssize_t>names.ids[k] + 1
        names.n = kept
        names.nbytes = at + (kept + 1) * sizeof(uint32_t) + kept * sizeof(int32_t)
    finally:
        PyMem_Free(raw)
        PyMem_Free(raw_offsets)
        PyMem_Free(raw_ids)
        PyMem_Free(order)
    return names


cdef _Names _merge_names(_Names old, _Names added, unsigned char* drop, Py_ssize_t drop_bits,
                         unsigned char* touch):
    """``old`` without the names of ids in ``drop`` and the names ``added`` holds, plus ``added`` (both
    sorted: one merge). Marks in ``touch`` the ids whose names went or came."""
    cdef _Names names = _Names.__new__(_Names)
    cdef Py_ssize_t cap = (old.offsets[old.n] if old.n else 0) + (added.offsets[added.n] if added.n else 0)
    names.arena = <char*>PyMem_Malloc(cap if cap > 0 else 1)
    names.offsets = <uint32_t*>PyMem_Malloc((old.n + added.n + 1) * sizeof(uint32_t))
    names.ids = <int32_t*>PyMem_Malloc((old.n + added.n if old.n + added.n > 0 else 1) * sizeof(int32_t))
    if names.arena is NULL or names.offsets is NULL or names.ids is NULL:
        raise MemoryError()
    if <size_t>cap > UINT32_MAX:
        raise OverflowError("the catalog's names exceed 4 GiB")
    names.offsets[0] = 0
    names.nbits = 0
    with nogil:  # C alone from here: update_catalog in a thread leaves the event loop running meanwhile
        _merge_into(old, added, drop, drop_bits, touch, names)
    return names


cdef void _merge_into(_Names old, _Names added, unsigned char* drop, Py_ssize_t drop_bits,
                      unsigned char* touch, _Names names) noexcept nogil:
    """The merge of _merge_names into ``names`` (its arrays allocated to fit)."""
    cdef Py_ssize_t i = 0, j = 0, k = 0, at = 0, size
    cdef int c
    cdef long long ident
    cdef const char* src
    while i < old.n or j < added.n:
        if i >= old.n:
            c = 1
        elif j >= added.n:
            c = -1
        else:
            c = _compare(
                old.arena + old.offsets[i], old.offsets[i + 1] - old.offsets[i],
                added.arena + added.offsets[j], added.offsets[j + 1] - added.offsets[j],
            )
        if c < 0 or c == 0:
            ident = old.ids[i]
            i += 1
            if c == 0 or (ident < drop_bits and (drop[ident >> 3] >> (ident & 7)) & 1):
                touch[ident >> 3] |= <unsigned char>(1 << (ident & 7))  # its image may go with it
                if c < 0:
                    continue
            else:
                src = old.arena + old.offsets[i - 1]
                size = old.offsets[i] - old.offsets[i - 1]
                memcpy(names.arena + at, src, size)
                at += size
                names.ids[k] = <int32_t>ident
                k += 1
                names.offsets[k] = <uint32_t>at
                if ident + 1 > names.nbits:
                    names.nbits = ident + 1
                continue
        ident = added.ids[j]
        size = added.offsets[j + 1] - added.offsets[j]
        memcpy(names.arena + at, added.arena + added.offsets[j], size)
        at += size
        j += 1
        touch[ident >> 3] |= <unsigned char>(1 << (ident & 7))
        names.ids[k] = <int32_t>ident
        k += 1
        names.offsets[k] = <uint32_t>at
        if ident + 1 > names.nbits:
            names.nbits = ident + 1
    names.n = k
    names.nbytes = at + (k + 1) * sizeof(uint32_t) + k * sizeof(int32_t)


cdef int _entry_kind(const char* path, Py_ssize_t stem_size, const char* stem) noexcept nogil:
    """What the scan would see at ``path`` (the folder's ``{stem}.jpg``): 1 a regular file, 2 a symlink (the
    caller asks _link_is_served where it leads), 0 nothing it counts."""
    cdef struct_stat st
    if stem_size <= 0 or memchr(stem, 0x2F, stem_size) is not NULL or memchr(stem, 0, stem_size) is not NULL:
        return 0  # no directory entry has this name (the scan never looks it up)
    if lstat(path, &st) != 0:
        return 0
    if S_ISREG(st.st_mode):
        return 1
    return 2 if S_ISLNK(st.st_mode) else 0


@cython.auto_pickle(False)
cdef class ImageIndex:
    """Which products have an image, as a bitset over dense product ids, rebuilt from the uploads folder."""

    def __init__(self, folder, refresh_interval_s=1.0):
        path = os.fspath(folder)
        if not isinstance(path, str):
            raise TypeError("folder must be a str path")
        interval = float(refresh_interval_s)
        if not (interval >= 0.0 and math.isfinite(interval)):
            raise ValueError(f"refresh_interval_s must be a finite number >= 0, got {refresh_interval_s!r}")
        self._folder = path
        self._folder_b = os.fsencode(path)
        self._interval = interval
        self._names = _build_names(())
        self._bits = _Bitset(0)
        self._bits.seal()
        self._last_check = math.nan
        self._scan_mtime = None
        self._racy = False

    @property
    def folder(self):
        """The uploads folder scanned for ``{zoho_item_id}.jpg``."""
        return self._folder

    @property
    def refresh_interval_s(self):
        """Minimum seconds between two stats of the folder in ``refresh()``."""
        return self._interval

    @property
    def count(self):
        """Number of catalog products that have an image."""
        return self._bits.count

    @property
    def fingerprint(self):
        """Hex digest of the set of image-bearing dense ids; equal across processes seeing the same set."""
        return self._bits.fingerprint

    @property
    def nbytes(self):
        """Bytes used by the bitset."""
        return self._bits.nbytes

    @property
    def catalog_nbytes(self):
        """Bytes used by the catalog's names and ids."""
        return self._names.nbytes

    def set_catalog(self, mapping):
        """Replace the catalog (a ``{zoho_item_id: dense_id}`` mapping or an iterable of such pairs; of
        equal names the last wins) and rescan the folder now."""
        self._names = _build_names(mapping)
        self._last_check = _monotonic()
        wall = _wall_ns()
        self._rescan(wall, self._stat_mtime())

    def update_catalog(self, upserts, remove_ids=()):
        """Change the catalog in place of a ``set_catalog`` of all of it: drop every name of the ids in
        ``remove_ids``, then add ``upserts`` (a mapping or pairs, as ``set_catalog`` takes; a name present
        takes its new id). Only the changed names' files are looked at (no rescan): the bits of the other
        ids stay as the last scan left them, and ``refresh()`` still rescans when the folder changes."""
        cdef _Names added = _build_names(upserts)
        cdef _Names old
        cdef _Bitset prior
        wanted = []
        for value in remove_ids:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"remove_ids: expected int, got {type(value).__name__}")
            if value >= 0:
                wanted.append(value)
        # A rescan in another thread (refresh) may store its bits while this looks at files (the GIL is
        # given up in os.path.realpath): both start from what they read and store only if nothing else was
        # stored meanwhile, else they start again from the new state, so neither undoes the other.
        while True:
            old, prior = self._names, self._bits
            result = self._updated(added, wanted, old, prior)
            if self._names is old and self._bits is prior:
                self._names, self._bits = result
                return

    cdef tuple _updated(self, _Names added, list wanted, _Names old, _Bitset prior):
        # (names, bits) of update_catalog from the state (old, prior).
        cdef _Names names
        cdef Py_ssize_t top = old.nbits if old.nbits > added.nbits else added.nbits
        cdef Py_ssize_t drop_bits = 0, b, k, size
        cdef long long ident
        cdef unsigned char* drop = NULL
        cdef unsigned char* touch = NULL
        cdef char* path = NULL
        cdef char* grown
        cdef Py_ssize_t base_size, path_cap
        cdef int kind
        cdef _Bitset bits
        cdef unsigned char byte
        kept = [v for v in wanted if v < old.nbits]  # other ids have no name to drop
        for value in kept:
            if value + 1 > drop_bits:
                drop_bits = value + 1
        try:
            drop = <unsigned char*>calloc(((drop_bits + 7) >> 3) + 1, 1)
            touch = <unsigned char*>calloc(((top + 7) >> 3) + 1, 1)
            if drop is NULL or touch is NULL:
                raise MemoryError()
            for value in kept:
                ident = value
                drop[ident >> 3] |= <unsigned char>(1 << (ident & 7))
            names = _merge_names(old, added, drop, drop_bits, touch)
            bits = _Bitset((names.nbits + 7) >> 3)
            size = bits.nbytes if bits.nbytes < prior.nbytes else prior.nbytes
            memcpy(bits.data, prior.data, size)
            for b in range(size):
                bits.data[b] &= ~touch[b]  # touched ids: looked at again below
            prefix = os.fsencode(os.path.join(os.path.realpath(self._folder), ""))
            base = os.path.join(self._folder_b, b"")
            base_size = len(base)
            path_cap = base_size + 256
            path = <char*>malloc(path_cap)
            if path is NULL:
                raise MemoryError()
            memcpy(path, PyBytes_AS_STRING(base), base_size)
            # Each touched name's file, looked at without the GIL (a path built in place, one lstat), so that
            # update_catalog run in a thread (server/catalog/feed.py) holds the event loop only to build
            # `added`; a symlink, rare, takes the GIL back to be followed as the scan follows it.
            with nogil:
                for k in range(names.n):
                    ident = names.ids[k]
                    if not (touch[ident >> 3] >> (ident & 7)) & 1 or (bits.data[ident >> 3] >> (ident & 7)) & 1:
                        continue
                    size = names.offsets[k + 1] - names.offsets[k]
                    if base_size + size + 5 > path_cap:
                        grown = <char*>realloc(path, base_size + size + 5)
                        if grown is NULL:
                            continue  # no memory for this one path: counted as no image, as a failed stat
                        path, path_cap = grown, base_size + size + 5
                    memcpy(path + base_size, names.arena + names.offsets[k], size)
                    memcpy(path + base_size + size, b".jpg", 5)  # with its NUL
                    kind = _entry_kind(path, size, names.arena + names.offsets[k])
                    if kind == 2:
                        with gil:
                            kind = _link_is_served(PyBytes_FromStringAndSize(path, base_size + size + 4), prefix)
                    if kind == 1:
                        bits.data[ident >> 3] |= <unsigned char>(1 << (ident & 7))
                for b in range(bits.nbytes):
                    byte = bits.data[b]
                    while byte:
                        byte &= byte - 1
                        bits.count += 1
        finally:
            free(drop)
            free(touch)
            free(path)
        bits.seal()
        return names, bits

    def has_item(self, zoho_item_id):
        """Whether the catalog product with this ``zoho_item_id`` has an image; no file-system access."""
        if not isinstance(zoho_item_id, str):
            raise TypeError(f"zoho_item_id must be a str, got {type(zoho_item_id).__name__}")
        try:
            stem = os.fsencode(zoho_item_id)
        except UnicodeEncodeError:
            return False
        return bitset_test(self._bits, self._names.find(PyBytes_AS_STRING(stem), len(stem)))

    def has(self, dense_id):
        """Whether the product with this dense id has an image (False when unknown); no file-system access."""
        return bitset_test(self._bits, _as_index(dense_id))

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def has_many(self, dense_ids):
        """``has()`` for each id, in order; no file-system access."""
        cdef _Bitset bits = self._bits
        seq = PySequence_Fast(dense_ids, "dense_ids must be a sequence of int")
        cdef Py_ssize_t n = PySequence_Fast_GET_SIZE(seq)
        cdef Py_ssize_t k
        cdef list out = PyList_New(n)
        cdef object flag
        for k in range(n):
            flag = True if bitset_test(bits, _as_index(<object>PySequence_Fast_GET_ITEM(seq, k))) else False
            Py_INCREF(flag)
            PyList_SET_ITEM(out, k, flag)
        return out

    def refresh(self, force=False):
        """Rescan if due and the folder changed; True only when a rescan ran and the image set changed."""
        cdef double now = _monotonic()
        if not force and now - self._last_check < self._interval:
            return False
        self._last_check = now
        # The wall clock is read before the stat: any later change to the folder gets an mtime after this
        # instant, unless the file system's timestamp tick is coarse, which is what the racy flag covers.
        wall = _wall_ns()
        mtime = self._stat_mtime()
        if not force and not self._racy and mtime == self._scan_mtime:
            return False
        return self._rescan(wall, mtime)

    cdef object _stat_mtime(self):
        cdef struct_stat st
        cdef int err
        if stat(PyBytes_AS_STRING(self._folder_b), &st) != 0:
            err = c.errno
            if err == ENOENT or err == ENOTDIR:
                return None
            raise OSError(err, os.strerror(err), self._folder)
        return <long long>st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec

    cdef bint _rescan(self, object wall, object mtime) except -1:
        # The scan gives up the GIL (os.path.realpath, symlink checks), and update_catalog or set_catalog
        # may store a new catalog meanwhile: bits made for the old names would undo it, so scan again.
        cdef _Names names
        cdef _Bitset prior, bits
        while True:
            names, prior = self._names, self._bits
            bits = self._scan(names)
            if self._names is names and self._bits is prior:
                break
        if bits is None:
            mtime = None  # no folder: no image
            bits = _Bitset((names.nbits + 7) >> 3)
            bits.seal()
        changed = bits.fingerprint != self._bits.fingerprint
        self._bits = bits
        self._scan_mtime = mtime
        self._racy = mtime is not None and wall - mtime < _RACY_WINDOW_NS
        return changed

    cdef _Bitset _scan(self, _Names names):
        # The bits of `names` found in the folder, sealed; None when there is no folder.
        cdef _Bitset bits = _Bitset((names.nbits + 7) >> 3)
        cdef DIR* d
        cdef dirent* entry
        cdef struct_stat st
        cdef Py_ssize_t n
        cdef long long i
        cdef unsigned char kind, mask
        cdef int err
        # A symlink counts only if the image route would serve it: resolved inside the real folder.
        cdef bytes prefix = os.fsencode(os.path.join(os.path.realpath(self._folder), ""))
        cdef bytes base = os.path.join(self._folder_b, b"")
        # Every link sits in the folder, so links with the same target text resolve alike within one scan.
        cdef dict link_verdicts = {}
        cdef char target[PATH_MAX]
        cdef Py_ssize_t tlen
        d = opendir(PyBytes_AS_STRING(self._folder_b))
        if d is NULL:
            err = c.errno
            if err != ENOENT and err != ENOTDIR:
                raise OSError(err, os.strerror(err), self._folder)
            return None
        else:
            try:
                while True:
                    c.errno = 0
                    entry = readdir(d)
                    if entry is NULL:
                        err = c.errno
                        if err != 0:
                            raise OSError(err, os.strerror(err), self._folder)
                        break
                    n = strlen(entry.d_name)
                    if n <= 4 or memcmp(entry.d_name + n - 4, b".jpg", 4) != 0:
                        continue
                    i = names.find(entry.d_name, n - 4)
                    if i < 0:
                        continue
                    kind = entry.d_type
                    if kind == DT_UNKNOWN:
                        # Some file systems (XFS without ftype, some FUSE) do not fill d_type.
                        if fstatat(dirfd(d), entry.d_name, &st, AT_SYMLINK_NOFOLLOW) != 0:
                            continue  # removed since readdir returned it
                        kind = DT_REG if S_ISREG(st.st_mode) else DT_LNK if S_ISLNK(st.st_mode) else DT_UNKNOWN
                    if kind == DT_LNK:
                        tlen = readlinkat(dirfd(d), entry.d_name, target, PATH_MAX)
                        if tlen < 0:
                            continue  # removed since readdir returned it
                        text = PyBytes_FromStringAndSize(target, tlen)
                        verdict = link_verdicts.get(text)
                        if verdict is None:
                            link = base + PyBytes_FromStringAndSize(entry.d_name, n)
                            verdict = link_verdicts[text] = _link_is_served(link, prefix)
                        if not verdict:
                            continue
                    elif kind != DT_REG:
                        continue
                    mask = <unsigned char>(1 << (i & 7))
                    if not bits.data[i >> 3] & mask:
                        bits.data[i >> 3] |= mask
                        bits.count += 1
            finally:
                closedir(d)
        bits.seal()
        return bits
