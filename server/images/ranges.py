"""Single byte ranges for the image route (RFC 9110 §14): parse `Range`, judge `If-Range`.

Mobile clients resume downloads with one range; several ranges (multipart/byteranges) are answered with
the whole file, which the RFC allows and no image client needs.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime

from server.errors import RangeNotSatisfiable

_SPEC_RE = re.compile(r"[ \t]*(\d*)-(\d*)[ \t]*")
# More digits than any file length: a start that long is past the end, an end that long means "to the end".
_DIGITS = 18


def byte_range(header: str, length: int) -> tuple[int, int] | None:
    """(first, last) byte of one satisfiable range, None to send the whole file; raises for unsatisfiable."""
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec or length == 0:
        return None  # other units, several ranges, nothing to cut: the whole file
    m = _SPEC_RE.fullmatch(spec)
    if m is None or not (m[1] or m[2]):
        return None  # an invalid Range is ignored
    first, last = m[1], m[2]
    if not first:  # suffix: the last N bytes
        if not last.lstrip("0"):
            raise _unsatisfiable(length)  # the last zero bytes
        n = length if len(last) > _DIGITS else int(last)
        return max(0, length - n), length - 1
    if len(first) > _DIGITS:
        raise _unsatisfiable(length)
    start = int(first)
    end = length - 1 if not last or len(last) > _DIGITS else int(last)
    if last and end < start:
        return None  # last before first: invalid, ignored
    if start >= length:
        raise _unsatisfiable(length)
    return start, min(end, length - 1)


def _unsatisfiable(length: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        "The requested byte range lies outside the file.",
        "نطاق البايتات المطلوب يقع خارج الملف.",
        headers={"Content-Range": f"bytes */{length}"},
    )


def if_range_allows(if_range: str | None, etag: str, last_modified: str) -> bool:
    """Whether a range may be served: no If-Range, or it names the current file (strong ETag or its date)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag  # strong comparison
    if value.startswith("W/"):
        return False  # a weak validator never allows a range
    date, ours = http_date(value), http_date(last_modified)
    return date is not None and date == ours


def http_date(text: str) -> datetime | None:
    """An HTTP-date, or None for any text we cannot read (offsets that overflow included)."""
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
