# cython: autotestdict=False
"""Compiled ``ImageIndex``: a bitset over dense product ids, rebuilt from ``{zoho_item_id}.jpg`` names."""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE
from libc cimport errno as c
from libc.errno cimport ENOENT, ENOTDIR
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, strlen, strncmp
from posix.fcntl cimport AT_SYMLINK_NOFOLLOW
from posix.stat cimport S_ISLNK, S_ISREG, fstatat, stat, struct_stat
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

import hashlib
import math
import operator
import os

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
        self._catalog = {}
        self._nbits = 0
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

    def set_catalog(self, mapping):
        """Replace the ``{zoho_item_id: dense_id}`` map and rescan the folder now."""
        cdef dict catalog = {}
        cdef Py_ssize_t nbits = 0
        for key, value in mapping.items():
            if not isinstance(key, str):
                raise TypeError(f"catalog key {key!r}: expected str, got {type(key).__name__}")
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"catalog[{key!r}]: expected int, got {type(value).__name__}")
            if value < 0 or value > _MAX_DENSE_ID:
                raise ValueError(f"catalog[{key!r}] = {value}: dense id must be in 0..{_MAX_DENSE_ID}")
            try:
                # Keyed by the raw file-name bytes so the scan looks names up without decoding them.
                stem = os.fsencode(key)
            except UnicodeEncodeError:
                continue  # a name no file system can hold never matches a file
            catalog[stem] = int(value)
            if value + 1 > nbits:
                nbits = value + 1
        self._catalog = catalog
        self._nbits = nbits
        self._last_check = _monotonic()
        wall = _wall_ns()
        self._rescan(wall, self._stat_mtime())

    def has_item(self, zoho_item_id):
        """Whether the catalog product with this ``zoho_item_id`` has an image; no file-system access."""
        if not isinstance(zoho_item_id, str):
            raise TypeError(f"zoho_item_id must be a str, got {type(zoho_item_id).__name__}")
        try:
            stem = os.fsencode(zoho_item_id)
        except UnicodeEncodeError:
            return False
        cdef PyObject* found = PyDict_GetItem(self._catalog, stem)
        return found is not NULL and bitset_test(self._bits, <long long><object>found)

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
        cdef _Bitset bits = _Bitset((self._nbits + 7) >> 3)
        cdef DIR* d
        cdef dirent* entry
        cdef struct_stat st
        cdef Py_ssize_t n
        cdef long long i
        cdef unsigned char kind, mask
        cdef PyObject* found
        cdef dict catalog = self._catalog
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
            mtime = None
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
                    stem = PyBytes_FromStringAndSize(entry.d_name, n - 4)
                    found = PyDict_GetItem(catalog, stem)
                    if found is NULL:
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
                            verdict = link_verdicts[text] = _link_is_served(base + stem + b".jpg", prefix)
                        if not verdict:
                            continue
                    elif kind != DT_REG:
                        continue
                    i = <long long><object>found
                    mask = <unsigned char>(1 << (i & 7))
                    if not bits.data[i >> 3] & mask:
                        bits.data[i >> 3] |= mask
                        bits.count += 1
            finally:
                closedir(d)
        bits.seal()
        changed = bits.fingerprint != self._bits.fingerprint
        self._bits = bits
        self._scan_mtime = mtime
        self._racy = mtime is not None and wall - mtime < _RACY_WINDOW_NS
        return changed
