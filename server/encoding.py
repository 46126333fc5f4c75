"""Response encodings and validators: gzip bytes, strong ETags, Accept-Encoding negotiation.

A low module: the HTTP wrapper and the page cache both use it, and it imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import zlib

__all__ = ["GZIP_MIN_BYTES", "accepts_gzip", "etag_matches", "gzip_bytes", "gzip_etag", "strong_etag"]

GZIP_MIN_BYTES = 1024


def strong_etag(body: bytes) -> str:
    """A strong ETag from the body's content."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match list (or `*`) against our ETag."""
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == ours for candidate in if_none_match.split(","))


def gzip_etag(etag: str) -> str:
    """The ETag of a body's gzip representation: a different representation needs a different strong
    validator (RFC 9110 8.8.3), or a cache could answer a range or a 304 across encodings."""
    return etag[:-1] + '.gz"' if etag.endswith('"') else etag + ".gz"


_GZIP_ANSWERS: dict[str, bool] = {}


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True if `gzip` is acceptable with q > 0 (explicitly or through `*`); memoised per header value."""
    if not accept_encoding:
        return False
    known = _GZIP_ANSWERS.get(accept_encoding)
    if known is None:
        known = _accepts_gzip(accept_encoding)
        # Clients send a handful of distinct short values: bound entries and key size both.
        if len(_GZIP_ANSWERS) < 1024 and len(accept_encoding) <= 128:
            _GZIP_ANSWERS[accept_encoding] = known
    return known


def _accepts_gzip(accept_encoding: str) -> bool:
    star: float | None = None
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            key, _, value = p.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        coding = coding.strip()
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q
    return star is not None and star > 0


def gzip_bytes(body: bytes, level: int = 6) -> bytes:
    """gzip member with mtime 0, so equal inputs give equal outputs in every process."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)
    return comp.compress(body) + comp.flush()
