"""Compiled ``CatalogIndex`` (see ``_catalog_py`` for the pure twin with the same behaviour)."""

from collections.abc import Iterable, Sequence

from typing_extensions import disjoint_base

@disjoint_base
class CatalogIndex:
    """Every list, count and facet of the consumer catalog answered from memory, exactly as the SQL does.

    Products are rows ``(id, category, price_cents, stock, created_us, name_rank, active)``; only active
    ones are listed. Sorts: ``name`` = (name_rank, id), ``-name`` its reverse, ``price`` = price ASC NULLS
    LAST then id, ``-price`` = price DESC NULLS LAST then id DESC, ``newest`` = (created_us, id) DESC.
    ``category=`` matches the category and every descendant (through inactive ones too), ``min_price`` /
    ``max_price`` (cents, inclusive) never match an unpriced product, ``in_stock`` is ``stock > 0``, and
    ``only`` intersects with a set of ids (e.g. search hits).
    """

    def __len__(self) -> int: ...
    def __contains__(self, product_id: object, /) -> bool: ...
    @property
    def active_count(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    def set_categories(
        self, ids: Sequence[int], parents: Sequence[int | None], active: Sequence[bool]
    ) -> None: ...
    def build(
        self,
        ids: Sequence[int],
        categories: Sequence[int | None],
        prices: Sequence[int | None],
        stocks: Sequence[int],
        created_us: Sequence[int],
        name_ranks: Sequence[int],
        active: Sequence[bool],
    ) -> None: ...
    def upsert(
        self,
        product_id: int,
        category: int | None,
        price_cents: int | None,
        stock: int,
        created_us: int,
        name_rank: int,
        active: bool,
    ) -> None: ...
    def upsert_many(
        self,
        ids: Sequence[int],
        categories: Sequence[int | None],
        prices: Sequence[int | None],
        stocks: Sequence[int],
        created_us: Sequence[int],
        name_ranks: Sequence[int],
        active: Sequence[bool],
    ) -> None: ...
    def set_name_ranks(self, ids: Sequence[int], name_ranks: Sequence[int]) -> None: ...
    def ranked_count(self, low: int, high: int) -> int: ...
    def respread_name_ranks(
        self, low: int, high: int, after: int, free: int
    ) -> tuple[list[int], list[int]]: ...
    def remove(self, product_id: int) -> bool: ...
    def query(
        self,
        sort: str = "name",
        offset: int = 0,
        limit: int = 50,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
    ) -> tuple[list[int], int]: ...
    def count(
        self,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
    ) -> int: ...
    def category_counts(self) -> dict[int, int]: ...
    def facets(
        self,
        *,
        category: int | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        in_stock: bool | None = None,
        only: Iterable[int] | None = None,
        price_bounds: Sequence[int] = (),
    ) -> dict[str, object]: ...
