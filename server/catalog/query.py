"""Typed, normalised catalog queries: one object per request gives the SQL filter, the cache key and the
key of the remembered total, so the three can never disagree.

Normalisation makes equal answers share a key (`min_price=5`, `5.0` and `5.00`; `q=Pro` and `q=pro`, since
matching is case-insensitive), and the key is a JSON array of the normalised values: every string is
escaped, so no input can forge another query's key (`q=a&min_price=4000` inside a `q` value stays a `q`).
The answer is computed from the same normalised values, so two requests that share a key share the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson

from server.catalog.repo import ProductFilter
from server.catalog.search import MIN_RUN, normalise, searchable
from server.errors import FieldError, ValidationFailed

CENT = Decimal("0.01")


def _price(value: Decimal | None) -> Decimal | None:
    # Params admit at most 2 decimals, so quantising is exact: 5, 5.0 and 5.00 become 5.00.
    return None if value is None else value.quantize(CENT)


def _search(text: str | None) -> str | None:
    # The SQL matches catalog_search_norm(columns) (migration 0004); normalising q the same way here makes
    # every spelling of one search (case, tashkeel, hamza forms, Arabic-Indic digits) one key and one term.
    if text is None:
        return None
    term = normalise(text).strip()
    if not searchable(term):
        raise ValidationFailed(
            errors=[
                FieldError(
                    "query.q",
                    f"must contain at least {MIN_RUN} letters or digits in a row",
                    f"يجب أن يحتوي على {MIN_RUN} حروف أو أرقام متتالية على الأقل",
                )
            ]
        )
    return term


SKU_PREFIX = "sku:"
MAX_IDS = 200  # entries of one `ids=` batch


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _entry(raw: str) -> str:
    """One `ids` entry in its canonical form ("" when blank): a product id as a plain decimal (`007` -> `7`);
    a SKU normalised as search normalises it (case, Arabic-Indic digits, ...), prefixed with `sku:` only
    when it could be misread (all digits, blank, or itself starting with `sku:`). One form, one entry."""
    text = normalise(raw).strip()
    explicit = text.startswith(SKU_PREFIX)
    if explicit:
        text = text.removeprefix(SKU_PREFIX).strip()
    elif _is_id(text) or not text:
        return str(int(text)) if text else ""
    return SKU_PREFIX + text if _is_id(text) or not text or text.startswith(SKU_PREFIX) else text


def entry_sku(entry: str) -> str | None:
    """The normalised SKU of a canonical `ids` entry; None for a product id."""
    if _is_id(entry):
        return None
    return entry.removeprefix(SKU_PREFIX)


class CatalogQuery(Protocol):
    """What the page cache needs of any catalog query."""

    @property
    def cache_key(self) -> str: ...

    @property
    def page(self) -> int: ...


def _key(route: str, values: tuple[Any, ...]) -> str:
    return route + orjson.dumps(values, default=str).decode()


@dataclass(frozen=True, slots=True)
class ProductQuery:
    """`GET /api/consumer/products`, validated and normalised."""

    page: int
    page_size: int
    category_id: int | None
    q: str | None
    min_price: Decimal | None
    max_price: Decimal | None
    in_stock: bool | None
    sort: str
    facets: tuple[str, ...] = ()  # sorted: the set of facets asked for
    ids: tuple[str, ...] = ()  # canonical entries (_entry), first occurrence kept
    batch: bool = False  # `ids=` was given (perhaps empty): a look-up by ids and SKUs, not a listing
    # Unambiguous key of the answer (page cache), made once: the wrapper memoises queries, and a cached hit
    # reads it several times (the index's answer memo, the page cache).
    cache_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_key", _key("products", self._values()))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ProductQuery:
        """Normalise the wrapper's validated params."""
        if params["ids"] is not None:
            return cls._batch(params["ids"])
        return cls(
            page=params["page"],
            page_size=params["page_size"],
            category_id=params["category_id"],
            q=_search(params["q"]),
            min_price=_price(params["min_price"]),
            max_price=_price(params["max_price"]),
            in_stock=params["in_stock"],
            sort=params["sort"],
            facets=tuple(sorted(set(params["facets"] or ()))),
        )

    @classmethod
    def _batch(cls, entries: tuple[str, ...]) -> ProductQuery:
        # A look-up, not a listing: every other parameter is ignored (generated clients send their defaults
        # for page, page_size and sort), so the key holds the entries only.
        ids = tuple(dict.fromkeys(e for e in map(_entry, entries) if e))
        return cls(1, MAX_IDS, None, None, None, None, None, "name", ids=ids, batch=True)

    @property
    def filter(self) -> ProductFilter:
        """The SQL filter (repo) of this query."""
        return ProductFilter(
            category_id=self.category_id,
            q=self.q,
            min_price=self.min_price,
            max_price=self.max_price,
            in_stock=self.in_stock,
            sort=self.sort,
        )

    @property
    def offset(self) -> int:
        """Rows skipped before this page."""
        return (self.page - 1) * self.page_size

    @property
    def total_key(self) -> str:
        """Unambiguous key of what the total depends on: the filters, not the sort or the page."""
        return _key("total", self._values()[2:7])

    def _values(self) -> tuple[Any, ...]:
        values = (
            self.page,
            self.page_size,
            self.category_id,
            self.q,
            self.min_price,
            self.max_price,
            self.in_stock,
            self.sort,
        )
        # A plain page keeps its 8-value key; a batch or facets make it 10 values long (never ambiguous).
        if self.batch:
            return (*values, None, self.ids)
        return (*values, self.facets, None) if self.facets else values


@dataclass(frozen=True, slots=True)
class ProductId:
    """`GET /api/consumer/products/{id}`."""

    id: int
    cache_key: str = field(init=False, repr=False, compare=False)  # key of the answer (page cache)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_key", _key("product", (self.id,)))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ProductId:
        """From the wrapper's validated params."""
        return cls(params["id"])

    @property
    def page(self) -> int:
        """Depth, as for lists: a product is always worth sharing."""
        return 1


@dataclass(frozen=True, slots=True)
class CategoryQuery:
    """`GET /api/consumer/categories`."""

    page: int
    page_size: int
    parent_id: int | None
    cache_key: str = field(init=False, repr=False, compare=False)  # key of the answer (page cache)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_key", _key("categories", (self.page, self.page_size, self.parent_id)))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CategoryQuery:
        """From the wrapper's validated params."""
        return cls(params["page"], params["page_size"], params["parent_id"])

    @property
    def offset(self) -> int:
        """Rows skipped before this page."""
        return (self.page - 1) * self.page_size
