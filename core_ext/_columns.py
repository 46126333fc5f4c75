"""The row contract shared by both builds: column order of a product page row, and the index protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

__all__ = ["PRODUCT_COLUMNS", "ImageLookup", "RowLike"]

# The SELECT in the server's catalog repo must list exactly these columns in this order; the compiled
# serializer reads them by position and checks this tuple at import time.
PRODUCT_COLUMNS: Final = (
    "id",
    "zoho_item_id",
    "sku",
    "name",
    "name_ar",
    "category_id",
    "category_name",
    "category_name_ar",
    "price",
    "currency",
    "stock",
    "unit",
)


class RowLike(Protocol):
    """An asyncpg ``Record`` or a tuple: indexable by position, with a length."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __len__(self) -> int: ...


class ImageLookup(Protocol):
    """What ``serialize_page`` needs from an image index that is not the compiled ``ImageIndex``."""

    def has_many(self, dense_ids: Sequence[int], /) -> list[bool]: ...
