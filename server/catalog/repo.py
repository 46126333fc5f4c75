"""Catalog SQL. Every endpoint is one query, whatever the page size; inputs are always $n parameters.

Filters and sorts are chosen from the constant fragments below (never built from input text), so each
combination is one stable statement that asyncpg prepares once per connection.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from server.catalog.search import normalise

# The consumer list shows one price list's price; which one is a setting (CONSUMER_PRICE_LIST).
_FILTERED = """
WITH base AS NOT MATERIALIZED (
    SELECT p.id, p.name, p.created_at, pp.price
    FROM products p
    LEFT JOIN product_prices pp
           ON pp.product_id = p.id
          AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = $1)
    WHERE p.is_active{filters}
)
"""
_BASE = """{base}SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar,
       c.id, c.name, c.name_ar,
       page.price, pl.currency, p.stock_on_hand, p.unit,
       t.total
FROM (SELECT count(*) AS total FROM base) t
LEFT JOIN LATERAL (
    SELECT b.id, b.name, b.created_at, b.price FROM base b ORDER BY {order} LIMIT $2 OFFSET $3
) page ON true
LEFT JOIN products p ON p.id = page.id
LEFT JOIN categories c ON c.id = p.category_id
LEFT JOIN price_lists pl ON pl.code = $1
ORDER BY {outer_order}
"""

# The same page when the total of this filter is already known (the count is most of a cold page's cost
# on a large catalog, and paging or re-sorting keeps the filter): no count, same parameters.
_PAGE_ONLY = """{base}SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar,
       c.id, c.name, c.name_ar,
       page.price, pl.currency, p.stock_on_hand, p.unit,
       NULL::bigint AS total
FROM (SELECT b.id, b.name, b.created_at, b.price FROM base b ORDER BY {order} LIMIT $2 OFFSET $3) page
JOIN products p ON p.id = page.id
LEFT JOIN categories c ON c.id = p.category_id
LEFT JOIN price_lists pl ON pl.code = $1
ORDER BY {outer_order}
"""

# name -> (inner ORDER BY over `b`, outer ORDER BY over `page`)
SORTS: dict[str, tuple[str, str]] = {
    "name": ("b.name, b.id", "page.name, page.id"),
    "-name": ("b.name DESC, b.id DESC", "page.name DESC, page.id DESC"),
    "price": ("b.price ASC NULLS LAST, b.id", "page.price ASC NULLS LAST, page.id"),
    "-price": ("b.price DESC NULLS LAST, b.id DESC", "page.price DESC NULLS LAST, page.id DESC"),
    "newest": ("b.created_at DESC, b.id DESC", "page.created_at DESC, page.id DESC"),
}

# filter name -> SQL with {n} for its parameter number
_FILTERS: dict[str, str] = {
    # `= ANY(ARRAY(subquery))`, not `IN (subquery)`: the array is computed once (an InitPlan), so the
    # planner can scan products_category_idx for it instead of hash-joining every active product
    # (count of a department at 200k products: 51-83 ms -> 10-17 ms; docs/query-plans.md).
    "category_id": (
        " AND p.category_id = ANY(ARRAY(WITH RECURSIVE sub(id) AS ("
        "SELECT ${n}::int UNION SELECT c.id FROM categories c JOIN sub ON c.parent_id = sub.id"
        ") SELECT id FROM sub))"
    ),
    # search_text is name, SKU and Arabic name normalised by catalog_search_norm (migration 0004), with one
    # trigram index; the term is normalised the same way in Python (server/catalog/search.py).
    "q": " AND p.search_text LIKE ${n}",
    "min_price": " AND pp.price >= ${n}",
    "max_price": " AND pp.price <= ${n}",
    "in_stock_true": " AND p.stock_on_hand > 0",
    "in_stock_false": " AND p.stock_on_hand <= 0",
}

INT4_MAX = 2_147_483_647  # products.id and categories.id are int4
TOTAL_COLUMN = 12  # index of `total` in the list rows, after core_ext.PRODUCT_COLUMNS

_statements: dict[tuple[str, ...], str] = {}


@dataclass(frozen=True, slots=True)
class ProductFilter:
    """Validated list inputs."""

    category_id: int | None = None
    q: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    in_stock: bool | None = None
    sort: str = "name"


def _like_pattern(text: str) -> str:
    # normalise() is idempotent: a term from ProductQuery is unchanged; any other caller gets the same match.
    escaped = normalise(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def filter_key(flt: ProductFilter) -> str:
    """What the total depends on: the filters, not the sort or the page."""
    return f"{flt.category_id}|{flt.q}|{flt.min_price}|{flt.max_price}|{flt.in_stock}"


def _filters(flt: ProductFilter, names: tuple[str, ...]) -> tuple[tuple[str, ...], list[Any]]:
    """The _FILTERS keys `flt` uses among `names` (in this order) and their parameter values."""
    keys: list[str] = []
    args: list[Any] = []
    for name in names:
        value = getattr(flt, name)
        if value is None:
            continue
        if name == "in_stock":
            keys.append("in_stock_true" if value else "in_stock_false")
        else:
            keys.append(name)
            args.append(_like_pattern(value) if name == "q" else value)
    return tuple(keys), args


def _where(keys: tuple[str, ...], first: int) -> str:
    """The SQL of these filters, their parameters numbered from `first`."""
    parts, n = [], first
    for key in keys:
        if key.startswith("in_stock"):
            parts.append(_FILTERS[key])
        else:
            parts.append(_FILTERS[key].replace("${n}", f"${n}"))
            n += 1
    return "".join(parts)


def list_statement(flt: ProductFilter, *, with_count: bool = True) -> tuple[str, list[Any]]:
    """The SQL (from constant fragments) and the extra parameters for this filter combination."""
    keys, args = _filters(flt, ("category_id", "q", "min_price", "max_price", "in_stock"))
    cache_key = (*keys, flt.sort, str(with_count))
    sql = _statements.get(cache_key)
    if sql is None:
        inner, outer = SORTS[flt.sort]
        template = _BASE if with_count else _PAGE_ONLY
        base = _FILTERED.format(filters=_where(keys, 4))
        sql = template.format(base=base, order=inner, outer_order=outer)
        _statements[cache_key] = sql
    return sql, args


async def list_products(
    conn: asyncpg.Connection,
    *,
    price_list: str,
    flt: ProductFilter,
    limit: int,
    offset: int,
    known_total: int | None = None,
) -> tuple[list[asyncpg.Record], int]:
    """One page of active products and the total matching count (one query; no count when the caller
    already knows the total of this filter in this catalog version)."""
    sql, args = list_statement(flt, with_count=known_total is None)
    rows = await conn.fetch(sql, price_list, limit, offset, *args)
    if known_total is not None:
        return list(rows), known_total
    total = rows[0][TOTAL_COLUMN] if rows else 0
    return [r for r in rows if r[0] is not None], total


# Facets (`facets=`), computed as core_ext.CatalogIndex.facets does: over the active products that match
# category_id and q, the category facet counts those that also pass the price and stock filters, the price
# buckets (width_bucket: bucket k holds bounds[k-1] <= price < bounds[k]; NULL = unpriced) those that pass
# the stock filter, the stock facet those that pass the price filter (which no unpriced product passes).
# Heads are the active children of $2 (the active roots when NULL), each counting its whole subtree as the
# category filter walks it (through inactive categories too), in the categories' order.
# One pass over the matching products into at most categories x buckets x 2 x 2 groups; the facets are
# sums over those groups. Rows: (0, ord, head id, count, name, name_ar) per head, (1, 0, bucket, count),
# (2, 0, in stock 0/1, count).
_FACETS = """
WITH RECURSIVE heads AS (
    SELECT c.id, c.name, c.name_ar, row_number() OVER (ORDER BY c.sort_order, c.name, c.id) AS ord
    FROM categories c
    WHERE c.is_active AND c.parent_id IS NOT DISTINCT FROM $2::int
),
tree(id, head) AS (
    SELECT id, id FROM heads
    UNION
    SELECT c.id, t.head FROM categories c JOIN tree t ON c.parent_id = t.id
),
groups AS (
    SELECT p.category_id, width_bucket(pp.price, $3::numeric[]) AS bucket, p.stock_on_hand > 0 AS stocked,
           coalesce(
               ($4::numeric IS NULL AND $5::numeric IS NULL)
               OR (pp.price >= coalesce($4, pp.price) AND pp.price <= coalesce($5, pp.price)),
               false
           ) AS price_ok,
           count(*) AS n
    FROM products p
    LEFT JOIN product_prices pp
           ON pp.product_id = p.id
          AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = $1)
    WHERE p.is_active{filters}
    GROUP BY 1, 2, 3, 4
),
marked AS (
    SELECT g.*, ($6::boolean IS NULL OR g.stocked = $6) AS stock_ok FROM groups g
)
SELECT 0 AS facet, h.ord, h.id AS key, coalesce(sum(m.n), 0)::bigint AS n, h.name, h.name_ar
FROM heads h
LEFT JOIN tree t ON t.head = h.id
LEFT JOIN marked m ON m.category_id = t.id AND m.price_ok AND m.stock_ok
GROUP BY h.ord, h.id, h.name, h.name_ar
UNION ALL
SELECT 1, 0, m.bucket, sum(m.n)::bigint, NULL, NULL FROM marked m WHERE m.stock_ok GROUP BY m.bucket
UNION ALL
SELECT 2, 0, m.stocked::int, sum(m.n)::bigint, NULL, NULL FROM marked m WHERE m.price_ok GROUP BY m.stocked
ORDER BY 1, 2, 3
"""


async def facet_counts(
    conn: asyncpg.Connection, *, price_list: str, flt: ProductFilter, bounds: list[Decimal]
) -> list[asyncpg.Record]:
    """The facet rows (see _FACETS) of this filter: one query, whatever the catalog's size."""
    keys, args = _filters(flt, ("category_id", "q"))
    sql = _statements.get(("facets", *keys))
    if sql is None:
        sql = _statements[("facets", *keys)] = _FACETS.format(filters=_where(keys, 7))
    return list(
        await conn.fetch(
            sql, price_list, flt.category_id, bounds, flt.min_price, flt.max_price, flt.in_stock, *args
        )
    )


# A batch by ids and SKUs (`ids=`): active products whose id is in $2, and for each SKU in $3 (normalised
# as catalog_search_norm does) the active product with the lowest id that has it (products_sku_norm_idx,
# migration 0006). List rows (core_ext.PRODUCT_COLUMNS), in no particular order.
PRODUCTS_BY_KEYS = """
SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar,
       c.id, c.name, c.name_ar,
       pp.price, pl.currency, p.stock_on_hand, p.unit
FROM products p
LEFT JOIN categories c ON c.id = p.category_id
LEFT JOIN price_lists pl ON pl.code = $1
LEFT JOIN product_prices pp ON pp.product_id = p.id AND pp.price_list_id = pl.id
WHERE p.is_active AND p.id IN (
    SELECT unnest($2::int[])
    UNION ALL
    SELECT (
        SELECT s.id FROM products s
        WHERE catalog_search_norm(s.sku) = k.sku AND s.is_active
        ORDER BY s.id LIMIT 1
    )
    FROM unnest($3::text[]) AS k(sku)
)
"""


async def products_by_keys(
    conn: asyncpg.Connection, price_list: str, ids: list[int], skus: list[str]
) -> list[asyncpg.Record]:
    """List rows of the active products with these ids, and of the lowest-id active product of each
    normalised SKU (one query). Ids beyond int4, blank SKUs and text PostgreSQL cannot hold (NUL) cannot
    match and are left out."""
    in_range = [i for i in ids if i <= INT4_MAX]
    storable = [s for s in skus if s and "\x00" not in s]
    return list(await conn.fetch(PRODUCTS_BY_KEYS, price_list, in_range, storable))


PRODUCT_DETAIL = """
SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar, p.description, p.description_ar, p.unit,
       p.stock_on_hand, p.created_at, p.updated_at,
       c.id AS category_id, c.name AS category_name, c.name_ar AS category_name_ar,
       ARRAY(
           SELECT ROW(pl.code, pl.name, pl.name_ar, pl.currency, pp.price)
           FROM product_prices pp JOIN price_lists pl ON pl.id = pp.price_list_id
           WHERE pp.product_id = p.id AND pl.consumer_visible
           ORDER BY pl.sort_order, pl.id
       ) AS prices
FROM products p
LEFT JOIN categories c ON c.id = p.category_id
WHERE p.id = $1 AND p.is_active
"""


async def get_product(conn: asyncpg.Connection, product_id: int) -> asyncpg.Record | None:
    """One active product with its category and every consumer-visible price (one query)."""
    return await conn.fetchrow(PRODUCT_DETAIL, product_id)


CATEGORIES = """
WITH RECURSIVE tree(id, root) AS (
    SELECT id, id FROM categories WHERE is_active
    UNION
    SELECT c.id, t.root FROM categories c JOIN tree t ON c.parent_id = t.id WHERE c.is_active
),
counts AS (
    SELECT t.root, count(p.id) AS n
    FROM tree t JOIN products p ON p.category_id = t.id AND p.is_active
    GROUP BY t.root
),
visible AS NOT MATERIALIZED (
    SELECT c.* FROM categories c
    WHERE c.is_active AND ($1::int IS NULL OR c.parent_id = $1)
)
SELECT page.id, page.zoho_category_id, page.name, page.name_ar, page.parent_id, page.sort_order,
       coalesce(counts.n, 0) AS product_count, t.total
FROM (SELECT count(*) AS total FROM visible) t
LEFT JOIN LATERAL (
    SELECT v.* FROM visible v ORDER BY v.sort_order, v.name, v.id LIMIT $2 OFFSET $3
) page ON true
LEFT JOIN counts ON counts.root = page.id
ORDER BY page.sort_order, page.name, page.id
"""


async def list_categories(
    conn: asyncpg.Connection, *, parent_id: int | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    """One page of active categories with product counts (own and descendants'), and the total."""
    rows = await conn.fetch(CATEGORIES, parent_id, limit, offset)
    total = rows[0]["total"] if rows else 0
    return [r for r in rows if r["id"] is not None], total


CATALOG_MAP = "SELECT zoho_item_id, id FROM products WHERE is_active"
# The image map's rows of some products (a catch-up of the map: server/catalog/feed.py).
CATALOG_MAP_BY_ID = "SELECT zoho_item_id, id, is_active FROM products WHERE id = ANY($1::int[])"
CATALOG_STATE = "SELECT epoch::text, version FROM catalog_state"
# The price lists the catalog shows: the consumer one ($1: its price and currency) and those a detail lists.
SHOWN_PRICE_LISTS = """
SELECT id, code, name, name_ar, currency, sort_order, consumer_visible FROM price_lists
WHERE consumer_visible OR code = $1 ORDER BY id
"""


async def catalog_state(conn: asyncpg.Connection) -> tuple[str, int]:
    """(epoch, version) of the catalog; the version grows with every committed change."""
    row = await conn.fetchrow(CATALOG_STATE)
    assert row is not None
    return row[0], row[1]


# Current version and every logged change after $1, in one snapshot (migration 0005). Versions are handed
# out in commit order and each has one row, so "all changes since v" is exactly v+1 .. current, no hole.
CHANGES_SINCE = """
SELECT s.version, c.version, c.tbl, c.ids, extract(epoch FROM c.committed_at)::float8
FROM catalog_state s
LEFT JOIN catalog_changes c ON c.version > $1 AND c.version <= s.version
ORDER BY c.version
"""
PRUNE_CHANGES = "SELECT catalog_changes_prune($1)"

Change = tuple[int, str, list[int] | None]
# When the changes a catch-up read committed (seconds since the epoch, the database's clock; migration
# 0013): the lag metric's starting points. A change logged before that migration has none.
CommitTimes = list[float]


async def shown_price_lists(conn: asyncpg.Connection, consumer: str) -> tuple[tuple[Any, ...], ...]:
    """SHOWN_PRICE_LISTS' rows, comparable."""
    return tuple(tuple(r) for r in await conn.fetch(SHOWN_PRICE_LISTS, consumer))


async def changes_since(conn: asyncpg.Connection, version: int) -> list[Change] | None:
    """(version, table, ids or None = everything) of each change after `version`, in commit order;
    None when the log no longer reaches back to version + 1 (a gap: rebuild instead)."""
    return (await timed_changes_since(conn, version))[0]


async def timed_changes_since(
    conn: asyncpg.Connection, version: int
) -> tuple[list[Change] | None, CommitTimes]:
    """changes_since, and when those changes committed."""
    rows = await conn.fetch(CHANGES_SINCE, version)
    found = [r for r in rows if r[1] is not None]
    times = [r[4] for r in found if r[4] is not None]
    return _complete([(r[1], r[2], r[3]) for r in found], version, rows[0][0]), times


def _complete(changes: list[Change], version: int, current: int) -> list[Change] | None:
    # Every version from version + 1 to current, without a hole; else None.
    if current < version:
        return None  # not this catalog's history (a restored or recreated database)
    if len(changes) != current - version or (changes and changes[0][0] != version + 1):
        return None
    return changes


async def prune_changes(conn: asyncpg.Connection, keep: int) -> int:
    """Delete logged changes more than `keep` versions old (the triggers also do this every 1,000
    versions, keeping 10,000); return how many went."""
    return int(await conn.fetchval(PRUNE_CHANGES, keep))


# -- the in-memory list index (server/catalog/live.py) ------------------------------------------------
# Its columns as core_ext.CatalogIndex takes them: the price in cents of the consumer list (2 decimals,
# so exact), created_at in microseconds since the epoch (extract gives an exact numeric), and a 64-bit
# hash of the name and the search text (a catch-up reloads the name ranks, and forgets remembered search
# hits, only when a changed product's hash differs); then the search text as UTF-8 bytes for
# core_ext.SearchIndex (bytea: asyncpg hands it over as bytes, with no str made and encoded again; the
# quick catch-up, which only runs when no hash changed, does not read it). No name is read. The index
# orders names by their dense rank, computed over every product with
# the same collation as the list's ORDER BY, in a query of its own: sorting only (id, name) is cheaper than
# sorting every column, and the columns' query streams in id order without a sort (a merge join of the two
# primary keys).
# Categories with what the categories endpoint shows, and `position`: their place in its ORDER BY, ranked
# here so that names compare with the database's collation, exactly as repo.CATEGORIES orders them.
INDEX_CATEGORIES = """
SELECT id, parent_id, is_active, zoho_category_id, name, name_ar, sort_order,
       row_number() OVER (ORDER BY sort_order, name, id) AS position
FROM categories ORDER BY id
"""
INDEX_PRODUCTS = """
SELECT p.id, p.category_id, (pp.price * 100)::bigint, p.stock_on_hand,
       (extract(epoch FROM p.created_at) * 1000000)::bigint, p.is_active,
       hashtextextended(p.name || E'\x1f' || coalesce(p.search_text, ''), 0),
       convert_to(p.search_text, 'UTF8')
FROM products p
LEFT JOIN product_prices pp
       ON pp.product_id = p.id AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = $1)
"""
INDEX_PRODUCTS_BY_ID = INDEX_PRODUCTS + "WHERE p.id = ANY($2::int[])"
INDEX_PRODUCTS_ALL = INDEX_PRODUCTS + "ORDER BY p.id"

# NAME_NEIGHBOURS' columns (id, same name as the row before, the id below, of an equal name, above; and the
# name, to order by) for the active products of a CTE `n` (id, name). One probe of products_name_idx finds,
# for each, the first other product at or above its name (`a`): when that one's name is greater, there is no
# equal name and it is the one above; and when it is the next product of `n` itself, that product's one below
# is this one. So a name costs two probes (one when `n` holds a run of names with nothing between them, as a
# sync's batches of new names often are), not three: the equal and above probes run only when `a` has the
# same name (a name twice). In each process's catch-up after each batch of new products, the probes were the
# most of the statement (5.4 of 7.8 ms for 200 names).
NEIGHBOUR_ROWS = """
SELECT r.id, r.name, r.same,
       CASE WHEN r.prev_next = r.id AND r.prev_above THEN r.prev_id
            ELSE (SELECT p.id FROM products p WHERE p.is_active AND p.name < r.name
                  ORDER BY p.name DESC, p.id DESC LIMIT 1) END AS below,
       CASE WHEN r.next_id IS NULL OR r.above THEN NULL
            ELSE (SELECT p.id FROM products p WHERE p.is_active AND p.name = r.name
                  AND p.id NOT IN (SELECT id FROM n) ORDER BY p.name, p.id LIMIT 1) END AS equal,
       CASE WHEN r.next_id IS NULL OR r.above THEN r.next_id
            ELSE (SELECT p.id FROM products p WHERE p.is_active AND p.name > r.name
                  ORDER BY p.name, p.id LIMIT 1) END AS above
FROM (SELECT n.id, n.name, n.name = lag(n.name) OVER w AS same, a.id AS next_id, a.name > n.name AS above,
             lag(n.id) OVER w AS prev_id, lag(a.id) OVER w AS prev_next,
             lag(a.name > n.name) OVER w AS prev_above
      FROM n LEFT JOIN LATERAL (SELECT p.id, p.name FROM products p
                                WHERE p.is_active AND p.name >= n.name AND p.id <> n.id
                                ORDER BY p.name, p.id LIMIT 1) a ON true
      WINDOW w AS (ORDER BY n.name, n.id)) r
"""

# A catch-up in one statement (one snapshot, one round trip): the state, every change after $1 and the index
# rows (INDEX_PRODUCTS' columns, the same expressions; the search text only for the new products, ids
# above $3, the largest the index can hold) of the products those changes name, and NAME_NEIGHBOURS' rows of
# the new active products among them, placed there and then (a sync's batch of inserts). LiveCatalog's
# quick path; it falls back to the transactional one (changes_since and friends) for anything but product
# and price changes, and for changes naming more than $4 products (`fits` false, no rows read): one value
# holding them all would be decoded in one go, holding the event loop (50,000 rows: ~0.7 s), where the
# transactional path reads them through a cursor. Each price comes by a probe of product_prices' primary key:
# joined, the planner (unaware of how many ids the changes hold) hashed the consumer list's every price for
# each catch-up (~15 ms of a busy database's CPU per 200-row batch, twice, once per serving process).
CATCH_UP = (
    """
WITH s AS (SELECT epoch::text AS epoch, version FROM catalog_state),
c AS (SELECT c.version, c.tbl, c.ids, c.committed_at FROM catalog_changes c, s
      WHERE c.version > $1 AND c.version <= s.version),
n AS (SELECT p.id, p.name FROM products p
      WHERE p.is_active AND p.id > $3 AND p.id IN (SELECT unnest(c.ids) FROM c WHERE c.tbl = 'products')),
k AS (SELECT count(*) <= $4 AS fits FROM c, unnest(c.ids) WHERE c.tbl IN ('products', 'product_prices'))
SELECT s.epoch, s.version,
       (SELECT array_agg((c.version, c.tbl, array_to_string(c.ids, ',')) ORDER BY c.version) FROM c),
       k.fits,
       CASE WHEN k.fits THEN
       (SELECT array_agg((p.id, p.category_id,
                          (SELECT (pp.price * 100)::bigint FROM product_prices pp
                           WHERE pp.product_id = p.id
                             AND pp.price_list_id = (SELECT id FROM price_lists WHERE code = $2)),
                          p.stock_on_hand, (extract(epoch FROM p.created_at) * 1000000)::bigint, p.is_active,
                          hashtextextended(p.name || E'\x1f' || coalesce(p.search_text, ''), 0),
                          CASE WHEN p.id > $3 THEN convert_to(p.search_text, 'UTF8') END)
                         ORDER BY p.id)
        FROM products p
        WHERE p.id IN (SELECT unnest(c.ids) FROM c WHERE c.tbl IN ('products', 'product_prices'))) END,
       CASE WHEN k.fits THEN
       (SELECT array_agg((x.id, x.same, x.below, x.equal, x.above) ORDER BY x.name, x.id)
        FROM ("""  # noqa: S608 (constants only: NEIGHBOUR_ROWS is this module's SQL text, no input)
    + NEIGHBOUR_ROWS
    + """) x) END,
       (SELECT array_agg(extract(epoch FROM c.committed_at)::float8) FROM c WHERE c.committed_at IS NOT NULL)
FROM s, k
"""
)


async def catch_up(
    conn: asyncpg.Connection, version: int, price_list: str, known_max: int
) -> tuple[str, int, list[Change] | None, list[tuple[Any, ...]], list[tuple[Any, ...]], CommitTimes]:
    """(epoch, current version, the changes after `version` (None: a gap), index rows of the products they
    name, NAME_NEIGHBOURS' rows of those of them that are active with an id above `known_max`, when the
    changes committed), read in one snapshot. The changes are None (as for a gap) when they name more than
    INDEX_CHUNK products: the caller reads those in its transactional path."""
    row = await conn.fetchrow(CATCH_UP, version, price_list, known_max, INDEX_CHUNK)
    assert row is not None
    epoch, current, found, fits, products, neighbours, times = row
    if not fits:
        return epoch, current, None, [], [], []
    # The ids come as text (asyncpg decodes no array inside an anonymous record): '' is none, NULL all.
    changes: list[Change] = [
        (v, tbl, None if ids is None else [int(i) for i in ids.split(",")] if ids else [])
        for v, tbl, ids in found or ()
    ]
    complete = _complete(changes, version, current)
    return epoch, current, complete, list(products or ()), list(neighbours or ()), list(times or ())


# Dense ranks spread over [0, 2**61] (2**61 / (rows + 1) apart), so a catch-up can place new names between
# their neighbours' ranks (server/catalog/ranks.py).
NAME_RANKS = """
SELECT id, dense_rank() OVER (ORDER BY name) * (2305843009213693952 / (count(*) OVER () + 1))
FROM products
"""
# Of each active product of $1, in name order (ORDER BY name, id): its id, whether its name equals the one
# before, the id of the last active product named below it, of an equal name among the active products not
# in $1, and of the first active product named above it (NEIGHBOUR_ROWS).
NAME_NEIGHBOURS = (
    "WITH n AS (SELECT id, name FROM products WHERE id = ANY($1::int[]) AND is_active)"  # noqa: S608 (as CATCH_UP)
    " SELECT x.id, x.same, x.below, x.equal, x.above FROM (" + NEIGHBOUR_ROWS + ") x ORDER BY x.name, x.id"
)
# Rows of a full load per round trip: the load streams through a cursor, so it never holds every row, and
# the event loop serves requests between chunks. Decoding a chunk holds the loop: 50,000 index rows did so
# for ~0.3 s (a stall every request of the process waited for); 5,000 take ~20 ms, and the round trips a
# million rows then need (200) add ~40 ms to a load of seconds.
INDEX_CHUNK = 5_000

# One page of list rows by primary key, in the column shape of _BASE (core_ext.PRODUCT_COLUMNS), by
# ascending id (the order the primary-key scan reads them in: no sort). Inactive rows are returned too: the
# index decided what the page holds. The price comes as text, which is what serialize_page writes for a
# Decimal (format(v, "f")): asyncpg makes a Decimal by way of a string, so this saves the client about a
# fifth of decoding a 100-row page (README, Performance).
PAGE_BY_IDS = """
SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar,
       c.id, c.name, c.name_ar,
       pp.price::text, pl.currency, p.stock_on_hand, p.unit
FROM products p
LEFT JOIN categories c ON c.id = p.category_id
LEFT JOIN price_lists pl ON pl.code = $1
LEFT JOIN product_prices pp ON pp.product_id = p.id AND pp.price_list_id = pl.id
WHERE p.id = ANY($2::int[])
ORDER BY p.id
"""


async def index_categories(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """(id, parent_id, is_active, zoho_category_id, name, name_ar, sort_order, position) of every category,
    by id; `position` orders them as the categories endpoint does."""
    return list(await conn.fetch(INDEX_CATEGORIES))


async def index_products(conn: asyncpg.Connection, price_list: str, ids: list[int]) -> list[asyncpg.Record]:
    """(id, category_id, price_cents, stock, created_us, is_active, name_hash, search text as UTF-8) of these
    products; more than INDEX_CHUNK through a cursor, a chunk at a time (inside a transaction)."""
    if len(ids) <= INDEX_CHUNK:
        return list(await conn.fetch(INDEX_PRODUCTS_BY_ID, price_list, ids))
    rows: list[asyncpg.Record] = []
    async for chunk in _chunks(conn, INDEX_PRODUCTS_BY_ID, price_list, ids):
        rows.extend(chunk)
    return rows


async def _chunks(conn: asyncpg.Connection, sql: str, *args: Any) -> AsyncIterator[list[asyncpg.Record]]:
    # A cursor (inside the caller's transaction): INDEX_CHUNK rows per round trip, never all of them.
    cursor = await conn.cursor(sql, *args)
    while chunk := await cursor.fetch(INDEX_CHUNK):
        yield chunk


def index_product_chunks(conn: asyncpg.Connection, price_list: str) -> AsyncIterator[list[asyncpg.Record]]:
    """(id, category_id, price_cents, stock, created_us, is_active, name_hash, search text as UTF-8) of every
    product in id order, INDEX_CHUNK rows at a time (inside a transaction)."""
    return _chunks(conn, INDEX_PRODUCTS_ALL, price_list)


def name_rank_chunks(conn: asyncpg.Connection) -> AsyncIterator[list[asyncpg.Record]]:
    """(id, dense rank of the name) of every product (the order of sort=name), INDEX_CHUNK rows at a time
    (inside a transaction)."""
    return _chunks(conn, NAME_RANKS)


def catalog_map_chunks(conn: asyncpg.Connection) -> AsyncIterator[list[asyncpg.Record]]:
    """(zoho_item_id, id) of every active product, for the image index, INDEX_CHUNK rows at a time
    (inside a transaction)."""
    return _chunks(conn, CATALOG_MAP)


async def name_neighbours(conn: asyncpg.Connection, ids: list[int]) -> list[asyncpg.Record]:
    """NAME_NEIGHBOURS' rows for these products (inactive ones left out)."""
    return list(await conn.fetch(NAME_NEIGHBOURS, ids))


async def catalog_map_rows(conn: asyncpg.Connection, ids: list[int]) -> list[asyncpg.Record]:
    """(zoho_item_id, id, is_active) of these products (the missing ones were deleted)."""
    return list(await conn.fetch(CATALOG_MAP_BY_ID, ids))


async def page_by_ids(conn: asyncpg.Connection, price_list: str, ids: list[int]) -> list[asyncpg.Record]:
    """List rows (core_ext.PRODUCT_COLUMNS, price as text) of these products, by ascending id."""
    return list(await conn.fetch(PAGE_BY_IDS, price_list, ids))


# The ids of the active products a search matches (the `q` arm of _FILTERS, the same trigram index) and the
# catalog state of the snapshot they were read in. The index path searches in memory (core_ext.SearchIndex
# over the search texts of INDEX_PRODUCTS); this is the SQL reference its tests compare it with
# (tests/core/test_core_catalog_live_sql.py). The ids come as one bytea of big-endian int4s: a search most
# products match is 200,000 ids, which as an int4[] would cost a Python int each to decode.
SEARCH_HITS = """
SELECT s.epoch::text, s.version,
       (SELECT string_agg(int4send(p.id), ''::bytea) FROM products p
        WHERE p.is_active AND p.search_text LIKE $1)
FROM catalog_state s
"""


async def search_hits(conn: asyncpg.Connection, q: str) -> tuple[str, int, array[int]]:
    """(epoch, version, ids of the active products whose search text holds q, in no particular order),
    read in one snapshot."""
    row = await conn.fetchrow(SEARCH_HITS, _like_pattern(q))
    assert row is not None
    ids = array("i", row[2] or b"")
    if sys.byteorder == "little":
        ids.byteswap()
    return row[0], row[1], ids
