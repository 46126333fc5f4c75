"""Search text normalisation: the Python twin of SQL `catalog_search_norm` (migration 0004).

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
MIN_RUN = 3
_RUN = re.compile(rf"[^\W_]{{{MIN_RUN}}}")


def normalise(text: str) -> str:
    """`catalog_search_norm(text)` computed in Python (same result for every string)."""
    return text.translate(_TABLE)


def searchable(term: str) -> bool:
    """Whether a normalised term has MIN_RUN letters or digits in a row (so the index can serve it)."""
    return _RUN.search(term) is not None
