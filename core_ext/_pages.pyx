# cython: autotestdict=False
"""Compiled ``serialize_page``: writes the product-page JSON straight into a C buffer, meta via orjson.

The bytes are identical to ``_pages_py`` (dicts + ``orjson.dumps``); the string escaper reproduces orjson's:
``"`` ``\\`` and \\b \\f \\n \\r \\t get short forms, other bytes below 0x20 become ``\\u00xx`` (lower-case hex),
everything else, DEL and U+2028/U+2029 included, is written as raw UTF-8.
"""

cimport cython
from cpython.bool cimport PyBool_Check
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_Check, PyLong_CheckExact
from cpython.object cimport PyObject, PyObject_IsTrue, PyObject_Str
from cpython.sequence cimport PySequence_Fast, PySequence_Fast_GET_ITEM, PySequence_Fast_GET_SIZE, PySequence_GetItem
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Check
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, strlen

from core_ext._images cimport ImageIndex, bitset_test

from decimal import Decimal

import orjson

from core_ext._columns import PRODUCT_COLUMNS
from core_ext.errors import SerializationError


cdef extern from "Python.h":
    # Declared here without an exception clause so a lone surrogate can be turned into SerializationError
    # without a try block on the hot path; the caller checks for NULL.
    const char* _utf8 "PyUnicode_AsUTF8AndSize"(object s, Py_ssize_t* size)
    void PyErr_Clear()


# Column positions, checked against the one declaration in _columns.py when the module loads.
cdef enum:
    C_ID, C_ZOHO, C_SKU, C_NAME, C_NAME_AR, C_CAT_ID, C_CAT_NAME, C_CAT_NAME_AR, C_PRICE, C_CURRENCY
    C_STOCK, C_UNIT, NCOLS

if PRODUCT_COLUMNS != ("id", "zoho_item_id", "sku", "name", "name_ar", "category_id", "category_name",
                       "category_name_ar", "price", "currency", "stock", "unit"):
    raise ImportError("core_ext._columns.PRODUCT_COLUMNS changed; update the positions in _pages.pyx")


cdef extern from *:
    r"""
    /* The JSON byte buffer and its writers, in C so that literal lengths fold to constants and the hot
       helpers are always inlined (gcc declines to inline Cython's versions of them). */
    #include <stdint.h>
    #include <string.h>

    typedef struct { char *p; Py_ssize_t n; Py_ssize_t cap; } cx_buf;

    static int cx_grow(cx_buf *b, Py_ssize_t extra) {
        Py_ssize_t cap = b->cap * 2;
        char *p;
        if (cap < b->n + extra) cap = b->n + extra;
        p = (char *)realloc(b->p, (size_t)cap);
        if (p == NULL) { PyErr_NoMemory(); return -1; }
        b->p = p;
        b->cap = cap;
        return 0;
    }

    static inline __attribute__((always_inline)) int cx_reserve(cx_buf *b, Py_ssize_t extra) {
        return (b->n + extra > b->cap) ? cx_grow(b, extra) : 0;
    }

    static inline __attribute__((always_inline)) int cx_put(cx_buf *b, const char *s, Py_ssize_t n) {
        if (cx_reserve(b, n) < 0) return -1;
        memcpy(b->p + b->n, s, (size_t)n);
        b->n += n;
        return 0;
    }

    /* Only for string literals: strlen of a constant array is folded by the compiler. */
    #define cx_lit(b, s) cx_put((b), (s), (Py_ssize_t)strlen(s))

    /* 0: copy; 'u': \u00xx; else the letter after the backslash. Matches orjson's escaping. */
    static const unsigned char cx_escape[256] = {
        'u','u','u','u','u','u','u','u','b','t','n','u','f','r','u','u',
        'u','u','u','u','u','u','u','u','u','u','u','u','u','u','u','u',
        0, 0, '"', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, '\\', 0, 0, 0,
    };

    /* Whether any of 8 bytes is < 0x20, '"' or '\\' (exact for "any", which is all we ask). */
    static inline int cx_any_special(uint64_t x) {
        const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
        uint64_t lt = (x - ones * 0x20) & ~x;
        uint64_t q = x ^ (ones * 0x22), bs = x ^ (ones * 0x5c);
        q = (q - ones) & ~q;
        bs = (bs - ones) & ~bs;
        return ((lt | q | bs) & high) != 0;
    }

    static int cx_put_escaped(cx_buf *b, const char *text, Py_ssize_t n) {
        const unsigned char *s = (const unsigned char *)text;
        static const char hex[] = "0123456789abcdef";
        char *out;
        Py_ssize_t i = 0, stop;
        if (cx_reserve(b, n * 6) < 0) return -1;
        out = b->p + b->n;
        while (i < n) {
            /* Eight plain bytes at a time; drop to one at a time only around a byte that needs escaping. */
            while (i + 8 <= n) {
                uint64_t x;
                memcpy(&x, s + i, 8);
                if (cx_any_special(x)) break;
                memcpy(out, &x, 8);
                out += 8;
                i += 8;
            }
            stop = (i + 8 <= n) ? i + 8 : n;
            for (; i < stop; i++) {
                unsigned char ch = s[i], e = cx_escape[ch];
                if (e == 0) {
                    *out++ = (char)ch;
                } else if (e == 'u') {
                    memcpy(out, "\\u00", 4);
                    out[4] = hex[ch >> 4];
                    out[5] = hex[ch & 15];
                    out += 6;
                } else {
                    out[0] = '\\';
                    out[1] = (char)e;
                    out += 2;
                }
            }
        }
        b->n = out - b->p;
        return 0;
    }

    static inline __attribute__((always_inline)) int cx_put_quoted(cx_buf *b, const char *s, Py_ssize_t n) {
        if (cx_reserve(b, n * 6 + 2) < 0) return -1;
        b->p[b->n++] = '"';
        cx_put_escaped(b, s, n);  /* cannot fail: space reserved above */
        b->p[b->n++] = '"';
        return 0;
    }

    static int cx_put_u64(cx_buf *b, unsigned long long v, int negative) {
        char tmp[24];
        int k = 24;
        do {
            tmp[--k] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        if (negative) tmp[--k] = '-';
        return cx_put(b, tmp + k, 24 - k);
    }
    """
    ctypedef struct cx_buf:
        char* p
        Py_ssize_t n
        Py_ssize_t cap
    int reserve "cx_reserve"(cx_buf* b, Py_ssize_t extra) except -1
    int put "cx_put"(cx_buf* b, const char* s, Py_ssize_t n) except -1
    int lit "cx_lit"(cx_buf* b, const char* s) except -1
    int put_escaped "cx_put_escaped"(cx_buf* b, const char* s, Py_ssize_t n) except -1
    int put_quoted "cx_put_quoted"(cx_buf* b, const char* s, Py_ssize_t n) except -1
    int put_ull "cx_put_u64"(cx_buf* b, unsigned long long v, int negative) except -1


cdef object _fail(Py_ssize_t r, int c, str problem):
    return SerializationError(f"row {r} column {PRODUCT_COLUMNS[c]!r}: {problem}")


cdef int put_int(cx_buf* b, object v, Py_ssize_t r, int c, bint nullable) except -2:
    """Write an int cell (orjson's range: -2**63 .. 2**64-1); returns its sign, or 2 for null."""
    cdef int overflow = 0
    cdef long long x
    if v is None and nullable:
        lit(b, "null")
        return 2
    if not PyLong_CheckExact(v) and (PyBool_Check(v) or not PyLong_Check(v)):
        want = "int or None" if nullable else "int"
        raise _fail(r, c, f"expected {want}, got {type(v).__name__}")
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow == 0:
        if x < 0:
            # Negate in unsigned arithmetic so -2**63 does not overflow.
            put_ull(b, <unsigned long long>0 - <unsigned long long>x, True)
            return -1
        put_ull(b, <unsigned long long>x, False)
        return 1 if x > 0 else 0
    if overflow > 0 and v < 18446744073709551616:
        put_ull(b, PyLong_AsUnsignedLongLong(v), False)
        return 1
    raise _fail(r, c, "integer out of 64-bit range")


cdef inline int put_str(cx_buf* b, object v, Py_ssize_t r, int c, bint nullable, bint write) except -1:
    """Validate a str cell and, when write is set, write it quoted (or null)."""
    cdef Py_ssize_t n
    cdef const char* s
    if v is None and nullable:
        if write:
            lit(b, "null")
        return 0
    if not PyUnicode_Check(v):
        want = "str or None" if nullable else "str"
        raise _fail(r, c, f"expected {want}, got {type(v).__name__}")
    s = _utf8(v, &n)
    if s is NULL:
        PyErr_Clear()
        raise _fail(r, c, "string is not valid UTF-8 (lone surrogate)")
    if write:
        put_quoted(b, s, n)
    return 0


cdef int put_price(cx_buf* b, object v, Py_ssize_t r) except -1:
    cdef const char* s
    cdef Py_ssize_t n, i
    if v is None:
        return lit(b, "null")
    if PyUnicode_Check(v):
        # Already text (the query casts numeric to text, as format(v, "f") would write it): written as is.
        return put_str(b, v, r, C_PRICE, False, True)
    if not isinstance(v, Decimal):
        raise _fail(r, C_PRICE, f"expected Decimal, str or None, got {type(v).__name__}")
    # str() is ~3x faster than format(v, "f") and gives the same text whenever it has no exponent and is
    # not NaN/Infinity; anything else takes the exact route. Both are pure ASCII.
    text = PyObject_Str(v)
    s = _utf8(text, &n)
    for i in range(n):
        if not (c'0' <= s[i] <= c'9' or s[i] == c'.' or s[i] == c'-'):
            text = format(v, "f")
            s = _utf8(text, &n)
            break
    reserve(b, n + 2)
    b.p[b.n] = c'"'
    memcpy(b.p + b.n + 1, s, n)
    b.p[b.n + n + 1] = c'"'
    b.n += n + 2
    return 0


cdef inline object cell(object row, Py_ssize_t i, bint is_tuple):
    if is_tuple:
        return <object>PyTuple_GET_ITEM(row, i)
    return PySequence_GetItem(row, i)


cdef inline bint id_test_fails(object v):
    return not PyLong_CheckExact(v) and (PyBool_Check(v) or not PyLong_Check(v))


cdef object _checked_rows(rows, base_url, cx_buf* prefix):
    """The rows as a fast sequence (each with enough columns); `prefix` gets the escaped image URL prefix."""
    cdef Py_ssize_t nrows, r, ncols, n
    cdef const char* s
    seq = PySequence_Fast(rows, "rows must be iterable")
    nrows = PySequence_Fast_GET_SIZE(seq)
    for r in range(nrows):
        row = <object>PySequence_Fast_GET_ITEM(seq, r)
        ncols = PyTuple_GET_SIZE(row) if PyTuple_CheckExact(row) else len(row)
        if ncols < NCOLS:  # extra trailing columns (e.g. a window total) are ignored
            raise SerializationError(f"row {r}: expected at least {NCOLS} columns, got {ncols}")
    if not isinstance(base_url, str):
        raise SerializationError(f"base_url: expected str, got {type(base_url).__name__}")
    s = _utf8(base_url, &n)
    if s is NULL:
        PyErr_Clear()
        raise SerializationError("base_url: string is not valid UTF-8 (lone surrogate)")
    put_escaped(prefix, s, n)
    lit(prefix, "/product-images/")
    return seq


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _image_flags(object seq, object index, unsigned char* flags) except -1:
    """flags[r] = whether row r's product has an image (ids checked first, for every row, so that both
    builds report the same error when several cells are wrong)."""
    cdef Py_ssize_t nrows = PySequence_Fast_GET_SIZE(seq), r
    cdef long long x
    cdef int overflow
    cdef ImageIndex compiled_index = index if isinstance(index, ImageIndex) else None
    ids = None if compiled_index is not None else []
    for r in range(nrows):
        row = <object>PySequence_Fast_GET_ITEM(seq, r)
        v = cell(row, C_ID, PyTuple_CheckExact(row))
        if id_test_fails(v):
            raise _fail(r, C_ID, f"expected int, got {type(v).__name__}")
        overflow = 0
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow < 0 or (overflow > 0 and v >= 18446744073709551616):
            raise _fail(r, C_ID, "integer out of 64-bit range")
        if compiled_index is not None:
            flags[r] = overflow == 0 and bitset_test(compiled_index._bits, x)
        else:
            ids.append(v)
    if compiled_index is None:
        found = PySequence_Fast(index.has_many(ids), "has_many must return a sequence")
        if PySequence_Fast_GET_SIZE(found) != nrows:
            raise ValueError(
                f"index.has_many returned {PySequence_Fast_GET_SIZE(found)} flags for {nrows} ids"
            )
        for r in range(nrows):
            flags[r] = PyObject_IsTrue(<object>PySequence_Fast_GET_ITEM(found, r))
    return 0


cdef object _prepare(rows, index, base_url, cx_buf* prefix, unsigned char** flags):
    """The checked rows, the image URL prefix, and (malloc'd into *flags, the caller frees it) each row's
    image flag."""
    seq = _checked_rows(rows, base_url, prefix)
    nrows = PySequence_Fast_GET_SIZE(seq)
    flags[0] = <unsigned char*>malloc(nrows if nrows > 0 else 1)
    if flags[0] is NULL:
        raise MemoryError()
    _image_flags(seq, index, flags[0])
    return seq


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _write_items(cx_buf* bp, object seq, unsigned char* flags, cx_buf* prefix, Py_ssize_t* ends) except -1:
    """Each row's item object, comma-separated; ends[r] (when given) = where item r's bytes end."""
    cdef cx_buf b = bp[0]
    cdef Py_ssize_t nrows = PySequence_Fast_GET_SIZE(seq), r, zoho_at, zoho_len
    cdef int sign
    cdef bint is_tuple, has_image
    try:
        for r in range(nrows):
            row = <object>PySequence_Fast_GET_ITEM(seq, r)
            is_tuple = PyTuple_CheckExact(row)
            has_image = flags[r]
            if r:
                lit(&b, ',')
            lit(&b, '{"id":')
            put_int(&b, cell(row, C_ID, is_tuple), r, C_ID, False)
            lit(&b, ',"zoho_item_id":')
            zoho_at = b.n + 1
            put_str(&b, cell(row, C_ZOHO, is_tuple), r, C_ZOHO, False, True)
            zoho_len = b.n - 1 - zoho_at
            lit(&b, ',"sku":')
            put_str(&b, cell(row, C_SKU, is_tuple), r, C_SKU, True, True)
            lit(&b, ',"name":')
            put_str(&b, cell(row, C_NAME, is_tuple), r, C_NAME, False, True)
            lit(&b, ',"name_ar":')
            put_str(&b, cell(row, C_NAME_AR, is_tuple), r, C_NAME_AR, True, True)
            lit(&b, ',"category":')
            v = cell(row, C_CAT_ID, is_tuple)
            if v is None:
                lit(&b, "null")
                put_str(&b, cell(row, C_CAT_NAME, is_tuple), r, C_CAT_NAME, True, False)
                put_str(&b, cell(row, C_CAT_NAME_AR, is_tuple), r, C_CAT_NAME_AR, True, False)
            else:
                lit(&b, '{"id":')
                put_int(&b, v, r, C_CAT_ID, True)
                lit(&b, ',"name":')
                put_str(&b, cell(row, C_CAT_NAME, is_tuple), r, C_CAT_NAME, True, True)
                lit(&b, ',"name_ar":')
                put_str(&b, cell(row, C_CAT_NAME_AR, is_tuple), r, C_CAT_NAME_AR, True, True)
                lit(&b, "}")
            lit(&b, ',"price":')
            put_price(&b, cell(row, C_PRICE, is_tuple), r)
            lit(&b, ',"currency":')
            put_str(&b, cell(row, C_CURRENCY, is_tuple), r, C_CURRENCY, True, True)
            lit(&b, ',"stock":')
            sign = put_int(&b, cell(row, C_STOCK, is_tuple), r, C_STOCK, False)
            if sign > 0:
                lit(&b, ',"in_stock":true')
            else:
                lit(&b, ',"in_stock":false')
            lit(&b, ',"unit":')
            put_str(&b, cell(row, C_UNIT, is_tuple), r, C_UNIT, True, True)
            if has_image:
                lit(&b, ',"has_image":true,"image_url":"')
                put(&b, prefix.p, prefix.n)
                # The escaped zoho_item_id is already in the buffer: copy it rather than escape it again.
                reserve(&b, zoho_len)
                memcpy(b.p + b.n, b.p + zoho_at, zoho_len)
                b.n += zoho_len
                lit(&b, '.jpg"}')
            else:
                lit(&b, ',"has_image":false,"image_url":null}')
            if ends is not NULL:
                ends[r] = b.n
    finally:
        bp[0] = b  # the buffer may have moved: the caller frees it
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
def serialize_page(rows, index, base_url, meta):
    """The product-list response body: ``{"items": [...], **meta}`` as UTF-8 JSON bytes."""
    cdef cx_buf b
    cdef cx_buf prefix
    cdef Py_ssize_t nrows
    cdef unsigned char* flags = NULL

    if "items" in meta:
        raise ValueError("meta must not contain 'items'")
    b.p = NULL
    b.n = b.cap = 0
    prefix.p = NULL
    prefix.n = prefix.cap = 0
    try:
        seq = _prepare(rows, index, base_url, &prefix, &flags)
        nrows = PySequence_Fast_GET_SIZE(seq)
        reserve(&b, 400 * nrows + 256)
        lit(&b, '{"items":[')
        _write_items(&b, seq, flags, &prefix, NULL)
        lit(&b, "]")

        try:
            tail = orjson.dumps(meta if type(meta) is dict else dict(meta))
        except orjson.JSONEncodeError as exc:
            raise SerializationError(f"meta: {exc}") from None
        if PyBytes_GET_SIZE(tail) > 2:
            # Splice orjson's '{"page":1,...}' in after the items: drop its '{' and keep its '}'.
            lit(&b, ",")
            put(&b, PyBytes_AS_STRING(tail) + 1, PyBytes_GET_SIZE(tail) - 1)
        else:
            lit(&b, "}")
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        free(b.p)
        free(prefix.p)
        free(flags)


@cython.boundscheck(False)
@cython.wraparound(False)
def serialize_items(rows, index, base_url):
    """Each row's item of the product list, as the bytes serialize_page writes for it."""
    cdef cx_buf b
    cdef cx_buf prefix
    cdef Py_ssize_t nrows, r, start
    cdef unsigned char* flags = NULL
    cdef Py_ssize_t* ends = NULL

    b.p = NULL
    b.n = b.cap = 0
    prefix.p = NULL
    prefix.n = prefix.cap = 0
    try:
        seq = _prepare(rows, index, base_url, &prefix, &flags)
        nrows = PySequence_Fast_GET_SIZE(seq)
        ends = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * (nrows if nrows > 0 else 1))
        if ends is NULL:
            raise MemoryError()
        reserve(&b, 400 * nrows + 16)
        _write_items(&b, seq, flags, &prefix, ends)
        out = []
        start = 0
        for r in range(nrows):
            out.append(PyBytes_FromStringAndSize(b.p + start, ends[r] - start))
            start = ends[r] + 1  # past the comma
        return out
    finally:
        free(b.p)
        free(prefix.p)
        free(flags)
        free(ends)


def join_items(items, meta):
    """The product-list body from items made by serialize_items: equal to serialize_page's bytes."""
    if "items" in meta:
        raise ValueError("meta must not contain 'items'")
    try:
        tail = orjson.dumps(meta if type(meta) is dict else dict(meta))
    except orjson.JSONEncodeError as exc:
        raise SerializationError(f"meta: {exc}") from None
    joined = b",".join(items)
    if len(tail) > 2:
        return b"".join((b'{"items":[', joined, b"],", tail[1:]))
    return b"".join((b'{"items":[', joined, b"]}"))
