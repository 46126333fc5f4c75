"""Response encodings and validators: zstd / br / gzip bytes, strong ETags, Accept-Encoding negotiation.

A low module: the HTTP wrapper and the page cache both use it, and it imports nothing of ours.

Codecs and levels come from `loadtests/bench_compress.py` on real 100-item product pages (see
docs/compression.md): each is the cheapest level that still shrinks the hardest page measured by >= 85 %.
zlib-ng replaces stdlib zlib for gzip when it imports (same format, faster at an equal ratio); brotli and
zstd are offered only when their package imports. A missing package is logged once, never an error.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
import zlib
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "CODINGS",
    "GZIP_FLAVOUR",
    "GZIP_MIN_BYTES",
    "MIN_BYTES",
    "Representations",
    "coding_etag",
    "encode",
    "etag_matches",
    "gunzip",
    "gzip_bytes",
    "gzip_etag",
    "negotiate",
    "strong_etag",
]

log = logging.getLogger("server.encoding")

MIN_BYTES = 1024  # below this the headers outweigh the saving
GZIP_MIN_BYTES = MIN_BYTES

IDENTITY = "identity"
_missing: list[str] = []


def _load_gzip() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes], str, int]:
    deflate_lib: Any
    try:
        deflate_lib = importlib.import_module("zlib_ng.zlib_ng")
        level, suffix, flavour = 4, ".gz", 1
    except ImportError:
        deflate_lib, level, suffix, flavour = zlib, 5, ".gzs", 2
        _missing.append("zlib-ng (gzip uses the slower stdlib zlib, level 5)")

    def gzip_member(body: bytes) -> bytes:
        # wbits 31: a gzip member with mtime 0; one call, no compressor object (a few % faster).
        return bytes(deflate_lib.compress(body, level, wbits=31))

    def gunzip_member(data: bytes) -> bytes:
        return bytes(deflate_lib.decompress(data, wbits=31))

    # The fallback's bytes differ from zlib-ng's: its own ETag suffix (and GZIP_FLAVOUR, which the page
    # cache puts in its Redis format) keep strong validators honest when instances with and without
    # zlib-ng share one Redis.
    return gzip_member, gunzip_member, suffix, flavour


def _load_br() -> Callable[[bytes], bytes] | None:
    try:
        brotli = importlib.import_module("brotli")
    except ImportError:
        _missing.append("brotli (br is not offered)")
        return None
    text = brotli.MODE_TEXT

    def br(body: bytes) -> bytes:
        return bytes(brotli.compress(body, mode=text, quality=3))

    return br


def _load_zstd() -> Callable[[bytes], bytes] | None:
    try:
        zstd = importlib.import_module("compression.zstd")  # Python 3.14+
    except ImportError:
        try:
            zstd = importlib.import_module("backports.zstd")
        except ImportError:
            _missing.append("backports.zstd (zstd is not offered)")
            return None
    # One compressor, reused (a context costs more to set up than a page costs to compress); each call
    # ends a whole frame. Thread-safe per method, and the event loop calls it from one thread anyway.
    comp, frame = zstd.ZstdCompressor(level=3), zstd.ZstdCompressor.FLUSH_FRAME

    def zst(body: bytes) -> bytes:
        return bytes(comp.compress(body, frame))

    return zst


_gzip, _gunzip, _GZIP_SUFFIX, GZIP_FLAVOUR = _load_gzip()
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {}
_SUFFIXES: dict[str, str] = {}
# Server preference when the client's q-values tie: zstd (fastest at the best ratio), br, then gzip.
for _coding, _encoder, _suffix in (("zstd", _load_zstd(), ".zst"), ("br", _load_br(), ".br")):
    if _encoder is not None:
        _ENCODERS[_coding], _SUFFIXES[_coding] = _encoder, _suffix
_ENCODERS["gzip"], _SUFFIXES["gzip"] = _gzip, _GZIP_SUFFIX
CODINGS: tuple[str, ...] = tuple(_ENCODERS)  # what this process can send, in server preference order


class Representations(Protocol):
    """Pre-encoded bodies (the page cache's): the codings on offer and the bytes of one of them."""

    @property
    def length(self) -> int:
        """Length of the identity bytes."""
        ...

    @property
    def body(self) -> bytes:
        """The identity bytes (possibly made on demand)."""
        ...

    def codings(self) -> tuple[str, ...]:
        """Codings this body can be sent in, in server preference order."""
        ...

    def encoded(self, coding: str) -> bytes | None:
        """The body in `coding`, or None when that coding is not worth sending for it."""
        ...


def encode(body: bytes, coding: str) -> bytes:
    """`body` in one of CODINGS (deterministic: equal inputs give equal bytes in every process)."""
    return _ENCODERS[coding](body)


def gzip_bytes(body: bytes) -> bytes:
    """gzip member with mtime 0, so equal inputs give equal outputs in every process."""
    return _gzip(body)


def gunzip(data: bytes) -> bytes:
    """The bytes of one gzip member (a slim cached page's identity body)."""
    return _gunzip(data)


def strong_etag(body: bytes) -> str:
    """A strong ETag from the body's content: 96 bits of its SHA-256.

    SHA-256, not BLAKE2b: OpenSSL computes it with the CPU's SHA instructions (x86 since AMD Zen and Intel
    Ice Lake, ARMv8), 21 against 39 µs on a 36 KB page here, and every page made without the cache pays it.
    """
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list (or `*`) against our ETag."""
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == ours for candidate in if_none_match.split(","))


def coding_etag(etag: str, coding: str) -> str:
    """The ETag of a body's `coding` representation: each representation needs its own strong validator
    (RFC 9110 8.8.3), or a cache could answer a range or a 304 across encodings."""
    if coding == IDENTITY:
        return etag
    suffix = _SUFFIXES[coding]
    return etag[:-1] + suffix + '"' if etag.endswith('"') else etag + suffix


def gzip_etag(etag: str) -> str:
    """The ETag of a body's gzip representation."""
    return coding_etag(etag, "gzip")


# -- Accept-Encoding ----------------------------------------------------------------------------

_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 8.4.1.3
_MEMO: dict[str, tuple[str, ...]] = {}  # header -> _ranking(header)
_MEMO_MAX_ENTRIES = 1024
_MEMO_MAX_KEY_CHARS = 128
_warned = False


def _weights(accept_encoding: str) -> dict[str, float]:
    """coding -> q of each listed coding (lower case, aliases folded; the first listing of a coding wins).
    A q that is not an RFC 9110 qvalue counts as 0: never send a coding the client may not understand."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";") if params else ():
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.match(value) else 0.0
        weights.setdefault(_ALIASES.get(coding, coding), q)
    return weights


def _ranking(accept_encoding: str) -> tuple[str, ...]:
    """The codings this header accepts, best first (higher q, then the server's order), without those
    identity beats; () means identity."""
    weights = _weights(accept_encoding)
    star = weights.get("*")
    q = {coding: weights.get(coding, star if star is not None else 0.0) for coding in CODINGS}
    # identity is acceptable unless excluded (`identity;q=0`, or `*;q=0` without identity listed); when
    # it is not listed it only takes what no coding wanted. It beats a coding only with a strictly higher q.
    identity_q = weights.get(IDENTITY, star)
    floor = identity_q if identity_q is not None else 0.0
    ranked = sorted((c for c in CODINGS if q[c] > 0 and q[c] >= floor), key=lambda c: -q[c])  # stable
    # Nothing acceptable at all (every coding and identity excluded): RFC 9110 12.1 lets us disregard
    # the field rather than answer 406, and identity is what every client can read.
    return tuple(ranked)


def negotiate(accept_encoding: str | None, available: tuple[str, ...] = CODINGS) -> str:
    """The content coding to send: one of `available` (server preference order) or "identity".

    RFC 9110 12.5.3: the highest q wins, ties go to the server's order, `q=0` excludes, `*` stands for
    every coding not listed (identity included), identity is acceptable unless excluded; unknown codings
    are ignored. No header means no preference and gets identity (clients that never asked for a coding
    may not decode one); an empty one asks for identity. The ranking is memoised per header, bounded.
    """
    if not accept_encoding or not available:
        return IDENTITY
    ranked = _MEMO.get(accept_encoding)
    if ranked is None:
        _warn_missing_once()
        ranked = _ranking(accept_encoding)
        # Clients send a handful of distinct short values: bound entries and key size both.
        if len(_MEMO) < _MEMO_MAX_ENTRIES and len(accept_encoding) <= _MEMO_MAX_KEY_CHARS:
            _MEMO[accept_encoding] = ranked
    for coding in ranked:
        if coding in available:
            return coding
    return IDENTITY


def _warn_missing_once() -> None:
    # Here rather than at import: logging is configured by then, and it runs only on a memo miss.
    global _warned
    if not _warned:
        _warned = True
        for what in _missing:
            log.warning("compression package missing: %s", what)
