"""Compiled core of the catalog API: the product image index, the product-page serializer, the catalog
index (lists, counts and facets from memory) and the search index (substring search over search texts).

The Cython build is used unless ``CORE_EXT_NO_EXTENSIONS`` is set to a non-empty value other than ``"0"``
or the compiled modules cannot be imported; then the pure-Python twins, which give identical results, are
used. ``USING_COMPILED`` says which one is live.
"""

from __future__ import annotations

import os

from core_ext._columns import PRODUCT_COLUMNS
from core_ext.errors import CoreExtError, SerializationError

__all__ = [
    "PRODUCT_COLUMNS",
    "USING_COMPILED",
    "CatalogIndex",
    "CoreExtError",
    "ImageIndex",
    "SearchIndex",
    "SerializationError",
    "join_items",
    "serialize_items",
    "serialize_page",
]

USING_COMPILED: bool
if os.environ.get("CORE_EXT_NO_EXTENSIONS", "") in ("", "0"):
    try:
        # Both or neither: a compiled serializer must pair with the compiled index for its fast path.
        from core_ext._catalog import CatalogIndex
        from core_ext._images import ImageIndex
        from core_ext._pages import join_items, serialize_items, serialize_page
        from core_ext._search import SearchIndex
    except ImportError:
        USING_COMPILED = False
    else:
        USING_COMPILED = True
else:
    USING_COMPILED = False

if not USING_COMPILED:
    from core_ext._catalog_py import CatalogIndex  # type: ignore[assignment]
    from core_ext._images_py import ImageIndex  # type: ignore[assignment]
    from core_ext._pages_py import join_items, serialize_items, serialize_page
    from core_ext._search_py import SearchIndex  # type: ignore[assignment]
