"""Catalog writes of the sync: staged by COPY, compared, and applied only where a row differs.

Every function runs inside the caller's transaction (one per batch) on the run's connection, so a batch is
applied whole or not at all. A statement that would change nothing is never executed (the catalog triggers
would record an empty change and bump the version); an unchanged batch writes no catalog row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg

from server.sync import repo
from server.sync.mapping import Category, Item, PriceBook, fallback_code, price_list_code

log = logging.getLogger("server.sync.writer")


@dataclass(slots=True)
class Written:
    """Rows one batch inserted, updated or deleted, per kind."""

    products_new: int = 0
    products_changed: int = 0
    unknown_category: int = 0
    prices: int = 0
    categories: int = 0
    price_lists: int = 0
    deactivated: int = 0

    @property
    def products(self) -> int:
        """Products inserted or updated."""
        return self.products_new + self.products_changed


@dataclass(slots=True)
class PriceLists:
    """Our price lists as the sync sees them: code -> id, Zoho price book id -> id."""

    by_code: dict[str, int] = field(default_factory=dict)
    by_book: dict[str, int] = field(default_factory=dict)


async def prepare(conn: asyncpg.Connection) -> None:
    """Create this connection's staging tables (temporary; emptied at every commit), and mark its catalog
    changes bulk (0014_bulk_changes.sql): no reader waits for a sync batch's catch-up. A pool's reset
    (RESET ALL) clears the mark when the connection goes back."""
    await conn.execute(repo.CREATE_STAGING)
    await conn.execute(repo.BULK_CHANGES)


# Rows a phase must have written for the run to refresh the catalog's planner statistics.
ANALYZE_AFTER_ROWS = 1000
ANALYZED_TABLES = "products, product_prices, sync_items"


async def refresh_statistics(conn: asyncpg.Connection, written: int) -> None:
    """ANALYZE the synced tables when a phase wrote `written` >= ANALYZE_AFTER_ROWS rows (a first import, a
    new price book): until autovacuum gets to them, their statistics describe the catalog before it, and
    the next phase's statements and the API's SQL answers are planned for that (tens of ms for 30,000
    products). An error is logged, not raised."""
    if written >= ANALYZE_AFTER_ROWS:
        try:
            await conn.execute(f"ANALYZE {ANALYZED_TABLES}")
        except asyncpg.PostgresError as exc:  # not the tables' owner: autovacuum will do it
            log.warning("sync: could not analyze %s: %s", ANALYZED_TABLES, exc)


def _rows(status: str) -> int:
    """Rows a statement touched, from its status tag (`UPDATE 3`, `INSERT 0 3`, `DELETE 3`)."""
    return int(status.rsplit(" ", 1)[-1])


def _latest(items: Iterable[Item]) -> list[Item]:
    """One record per item id (the newest): a page may repeat an item that changed while it was read."""
    latest: dict[str, Item] = {}
    for item in items:
        seen = latest.get(item.zoho_item_id)
        if seen is None or item.modified_at >= seen.modified_at:
            latest[item.zoho_item_id] = item
    return list(latest.values())


async def write_items(
    conn: asyncpg.Connection,
    items: Sequence[Item],
    *,
    sweep: int,
    rate_list_id: int | None,
    invalid_ids: Sequence[str] = (),
) -> Written:
    """Apply one page of items (products, their rate price, the sync's item memory)."""
    out = Written()
    unique = _latest(items)
    if invalid_ids:
        await conn.execute(repo.MARK_SEEN, sweep, list(invalid_ids))
    if not unique:
        return out
    await conn.copy_records_to_table(
        "stage_items",
        records=[
            (
                i.zoho_item_id,
                i.sku,
                i.name,
                i.name_ar,
                i.description,
                i.description_ar,
                i.zoho_category_id,
                i.unit,
                i.stock_on_hand,
                i.is_active,
                i.created_at,
                i.modified_at,
                i.image_key,
            )
            for i in unique
        ],
        columns=repo.STAGE_ITEMS_COLUMNS,
    )
    await conn.execute(repo.PAGE_PLANS)
    new, changed, out.unknown_category = await conn.fetchrow(repo.COUNT_PRODUCT_CHANGES)
    if changed:
        out.products_changed = _rows(await conn.execute(repo.UPDATE_PRODUCTS))
    if new:
        out.products_new = _rows(await conn.execute(repo.INSERT_PRODUCTS))
    await conn.execute(repo.UPSERT_SYNC_ITEMS, sweep)
    if rate_list_id is not None:
        out.prices = await write_prices(conn, rate_list_id, [(i.zoho_item_id, i.rate) for i in unique])
    return out


async def write_prices(
    conn: asyncpg.Connection,
    price_list_id: int,
    prices: Sequence[tuple[str, Decimal | None]],
    *,
    complete: bool = False,
) -> int:
    """Apply (zoho_item_id, price or None to remove) to one list; `complete`: the list holds no others."""
    if prices:
        await conn.copy_records_to_table(
            "stage_prices",
            records=[(item_id, price_list_id, value) for item_id, value in prices],
            columns=repo.STAGE_PRICES_COLUMNS,
        )
        if len(prices) > 1000:  # a whole price book: statistics make the planner hash, as it should
            await conn.execute("ANALYZE stage_prices")
    new, changed, removed = await conn.fetchrow(repo.COUNT_PRICE_CHANGES)
    total = 0
    if changed:
        total += _rows(await conn.execute(repo.UPDATE_PRICES))
    if new:
        total += _rows(await conn.execute(repo.INSERT_PRICES))
    if removed:
        total += _rows(await conn.execute(repo.DELETE_PRICES))
    if complete and await conn.fetchval(repo.COUNT_PRICES_NOT_STAGED, price_list_id):
        total += _rows(await conn.execute(repo.DELETE_PRICES_NOT_STAGED, price_list_id))
    return total


def _acyclic(categories: Sequence[Category]) -> list[Category]:
    """Parents that exist and form no cycle; a broken link becomes a top-level category (logged)."""
    known = {c.zoho_category_id for c in categories}
    parent = {c.zoho_category_id: c.parent_zoho_id if c.parent_zoho_id in known else None for c in categories}
    out = []
    for c in categories:
        seen, node = {c.zoho_category_id}, parent[c.zoho_category_id]
        while node is not None and node not in seen:
            seen.add(node)
            node = parent[node]
        if node is not None or (c.parent_zoho_id is not None and c.parent_zoho_id not in known):
            log.warning("category %s: parent missing or in a cycle; kept at the top", c.zoho_category_id)
            c = Category(c.zoho_category_id, c.name, c.name_ar, None, c.sort_order, c.is_active)
            parent[c.zoho_category_id] = None
        out.append(c)
    return out


async def write_categories(conn: asyncpg.Connection, categories: Sequence[Category]) -> int:
    """Apply Zoho's whole category list: insert, update what differs, deactivate what it lacks."""
    await conn.copy_records_to_table(
        "stage_categories",
        records=[
            (c.zoho_category_id, c.name, c.name_ar, c.parent_zoho_id, c.sort_order, c.is_active)
            for c in _acyclic(categories)
        ],
        columns=repo.STAGE_CATEGORIES_COLUMNS,
    )
    # Rows written: a new category with a parent is inserted, then given its parent (two writes).
    total = 0
    if await conn.fetchval(repo.COUNT_NEW_CATEGORIES):
        total += _rows(await conn.execute(repo.INSERT_CATEGORIES))
    # After the insert, so new categories get their parents here.
    if await conn.fetchval(repo.COUNT_CHANGED_CATEGORIES):
        total += _rows(await conn.execute(repo.UPDATE_CATEGORIES))
    # An empty list is far likelier a wrong organisation or a Zoho fault than a shop without categories.
    if categories and await conn.fetchval(repo.COUNT_GONE_CATEGORIES):
        total += _rows(await conn.execute(repo.DEACTIVATE_GONE_CATEGORIES))
    return total


async def deactivate_unlisted(conn: asyncpg.Connection, sweep: int) -> int:
    """Full reconcile: deactivate (never delete) active products the completed sweep did not list."""
    if not await conn.fetchval(repo.COUNT_UNLISTED, sweep):
        return 0
    return _rows(await conn.execute(repo.DEACTIVATE_UNLISTED, sweep))


async def price_lists(conn: asyncpg.Connection) -> PriceLists:
    """Our price lists by code and by Zoho price book."""
    out = PriceLists()
    for row in await conn.fetch(repo.PRICE_LISTS):
        out.by_code[row["code"]] = row["id"]
        if row["zoho_pricebook_id"] is not None:
            out.by_book[row["zoho_pricebook_id"]] = row["id"]
    return out


async def ensure_rate_list(conn: asyncpg.Connection, code: str, currency: str) -> tuple[int | None, int]:
    """The id of the list fed by the item rate (created when missing), and how many lists were created.

    None when that list mirrors a Zoho price book: the book's prices win over the rate.
    """
    row = await conn.fetchrow("SELECT id, zoho_pricebook_id FROM price_lists WHERE code = $1", code)
    if row is not None:
        return (None if row["zoho_pricebook_id"] is not None else int(row["id"])), 0
    new_id = await conn.fetchval(
        repo.INSERT_PRICE_LIST, code, code.replace("_", " ").title(), currency, True, None
    )
    return int(new_id), 1


async def ensure_price_book(conn: asyncpg.Connection, book: PriceBook, lists: PriceLists) -> tuple[int, int]:
    """(list id, lists written) of a Zoho price book: created, or updated when name or currency changed."""
    existing = lists.by_book.get(book.zoho_pricebook_id)
    if existing is not None:
        row = await conn.fetchrow("SELECT name, currency FROM price_lists WHERE id = $1", existing)
        if row is not None and (row["name"], row["currency"]) != (book.name, book.currency):
            await conn.execute(repo.UPDATE_PRICE_LIST, existing, book.name, book.currency)
            return existing, 1
        return existing, 0
    code = price_list_code(book.name, book.zoho_pricebook_id)
    if code in lists.by_code:
        code = fallback_code(book.zoho_pricebook_id)
    # New books are not shown to shoppers until an operator says so (consumer_visible).
    new_id = int(
        await conn.fetchval(
            repo.INSERT_PRICE_LIST, code, book.name, book.currency, False, book.zoho_pricebook_id
        )
    )
    lists.by_code[code] = new_id
    lists.by_book[book.zoho_pricebook_id] = new_id
    return new_id, 1
