"""Search text normalisation: the Python twin of SQL `catalog_search_norm` (migrations 0004, 0016).

Both sides map the same characters the same way, so a normalised `q` is at once the cache key and the LIKE
term matched against `products.search_text` (name, SKU and Arabic name, normalised by the SQL function).
The mapping is explicit, character by character (`translate`), never the locale's `lower()`: it must give
the same answer in every database and in Python, or index and query would disagree
(tests/db/test_search_norm.py proves the two agree over every BMP character and random text).
"""

from __future__ import annotations

import re

# Case: ASCII, Latin-1 and Latin Extended-A capitals with a one-character lower case (not the locale's).
_UPPER = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞ"
    "ĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŸŹŻŽ"
)
_LOWER = (
    "abcdefghijklmnopqrstuvwxyzàáâãäåæçèéêëìíîïðñòóôõöøùúûüýþ"
    "āăąćĉċčďđēĕėęěĝğġģĥħĩīĭįĳĵķĺļľŀłńņňŋōŏőœŕŗřśŝşšţťŧũūŭůűųŵŷÿźżž"
)
# Control characters become spaces, so no query can contain the field separator of search_text (U+001F).
_CONTROLS = "".join(map(chr, range(0x01, 0x20))) + "\x7f"
# Alef with hamza above, below, madda, wasla -> alef; taa marbuta -> haa; alef maqsura -> yaa.
_ARABIC_FROM = "\u0623\u0625\u0622\u0671\u0629\u0649"
_ARABIC_TO = "\u0627\u0627\u0627\u0627\u0647\u064a"
# Arabic-Indic and Eastern Arabic-Indic (Persian) digits -> ASCII digits.
_DIGITS_FROM = "".join(map(chr, range(0x0660, 0x066A))) + "".join(map(chr, range(0x06F0, 0x06FA)))
_DIGITS_TO = "0123456789" * 2
# Removed: tashkeel (harakat U+064B-U+065F, superscript alef U+0670) and tatweel (U+0640).
_REMOVED = "".join(map(chr, range(0x064B, 0x0660))) + "\u0670\u0640"

FROM = _UPPER + _CONTROLS + _ARABIC_FROM + _DIGITS_FROM
TO = _LOWER + " " * len(_CONTROLS) + _ARABIC_TO + _DIGITS_TO
REMOVED = _REMOVED

_TABLE = str.maketrans(FROM, TO, REMOVED)

# A LIKE '%term%' can use the trigram index only when the term holds a trigram: three letters or digits
# in a row. Shorter terms ("tv", "a b", "%%") read the whole index (358 ms at 200,000 products).
# "Letter or digit" is an explicit set (Latin, Greek, Cyrillic, Arabic letters; ASCII and Arabic digits),
# not the regex engine's \w, so Q_PATTERN means the same in Python and in an OpenAPI (ECMA-262) validator.
MIN_RUN = 3
_WORD = (
    r"0-9A-Za-z\u00aa\u00b5\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"  # Latin
    r"\u0386\u0388-\u03ff\u0400-\u0481\u048a-\u04ff"  # Greek, Cyrillic
    r"\u0620-\u063f\u0641-\u064a\u0660-\u0669\u066e\u066f\u0671-\u06d3\u06d5\u06ee-\u06fc"  # Arabic
)
# What normalise() deletes (tashkeel, tatweel) may sit between the letters of a raw query.
_SKIPPED = r"\u0640\u064b-\u065f\u0670"
_RUN = re.compile(f"[{_WORD}]{{{MIN_RUN}}}")
# The same rule on the raw query (before normalising), for the OpenAPI schema of `q`; it also admits the
# empty string, since an empty search box (`q=`) means no filter (server.params), and refuses NUL, as
# server.params does (PostgreSQL text cannot hold it).
Q_PATTERN = rf"(?:|[^\x00]*(?:[{_WORD}][{_SKIPPED}]*){{{MIN_RUN - 1}}}[{_WORD}][^\x00]*)"


def normalise(text: str) -> str:
    """`catalog_search_norm(text)` computed in Python (same result for every string)."""
    return text.translate(_TABLE)


def searchable(term: str) -> bool:
    """Whether a normalised term has MIN_RUN letters or digits in a row (so the index can serve it);
    for a raw query q without NUL this equals `re.fullmatch(Q_PATTERN, q)`."""
    return _RUN.search(term) is not None
