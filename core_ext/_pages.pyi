"""Compiled ``serialize_page`` (see ``_pages_py`` for the pure twin producing the same bytes)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core_ext._columns import PRODUCT_COLUMNS as PRODUCT_COLUMNS
from core_ext._columns import ImageLookup, RowLike

def serialize_page(
    rows: Iterable[RowLike], index: ImageLookup, base_url: str, meta: Mapping[str, Any]
) -> bytes: ...
def serialize_items(rows: Iterable[RowLike], index: ImageLookup, base_url: str) -> list[bytes]: ...
def join_items(items: Sequence[bytes], meta: Mapping[str, Any]) -> bytes: ...
