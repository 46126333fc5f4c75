"""Admin SQL: API keys, the audited product writes, the audit log. Inputs are always $n parameters."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import orjson

# -- API keys ---------------------------------------------------------------------------------------

INSERT_KEY = """
INSERT INTO admin_keys (name, prefix, hash, scopes) VALUES ($1, $2, $3, $4)
RETURNING id, created_at
"""
# The one query of an authenticated request: the unique index on prefix, revoked keys never match.
ACTIVE_KEY_BY_PREFIX = """
SELECT id, name, hash, scopes FROM admin_keys WHERE prefix = $1 AND revoked_at IS NULL
"""
# At most one write per key per `$2` seconds, whatever the number of processes asking.
TOUCH_KEY = """
UPDATE admin_keys SET last_used_at = now()
WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))
"""
REVOKE_KEY = """
UPDATE admin_keys SET revoked_at = coalesce(revoked_at, now())
WHERE CASE WHEN $2::text IS NULL THEN id = $1 ELSE prefix = $2 END
RETURNING id, name, prefix, revoked_at
"""
LIST_KEYS = """
SELECT id, name, prefix, scopes, created_at, last_used_at, revoked_at FROM admin_keys ORDER BY id
"""

# -- products ---------------------------------------------------------------------------------------

# The row as the admin API shows it (and as audit_log's before/after record it), locked for the write.
PRODUCT_FOR_UPDATE = """
SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar, p.description, p.description_ar,
       p.category_id, p.stock_on_hand, p.is_active, p.updated_at
FROM products p WHERE p.id = $1 FOR UPDATE
"""
CATEGORY_EXISTS = "SELECT EXISTS (SELECT 1 FROM categories WHERE id = $1)"
# One statement for any subset of the editable columns: a flag says whether each one is given (no SQL
# built from input). Columns not given keep their value.
UPDATE_PRODUCT = """
UPDATE products p SET
    name           = CASE WHEN $2  THEN $3  ELSE p.name END,
    name_ar        = CASE WHEN $4  THEN $5  ELSE p.name_ar END,
    description    = CASE WHEN $6  THEN $7  ELSE p.description END,
    description_ar = CASE WHEN $8  THEN $9  ELSE p.description_ar END,
    category_id    = CASE WHEN $10 THEN $11 ELSE p.category_id END,
    is_active      = CASE WHEN $12 THEN $13 ELSE p.is_active END,
    updated_at     = now()
WHERE p.id = $1
RETURNING p.id, p.zoho_item_id, p.sku, p.name, p.name_ar, p.description, p.description_ar,
       p.category_id, p.stock_on_hand, p.is_active, p.updated_at
"""
SET_STOCK = """
UPDATE products p SET stock_on_hand = $2, updated_at = now() WHERE p.id = $1
RETURNING p.id, p.zoho_item_id, p.sku, p.name, p.name_ar, p.description, p.description_ar,
       p.category_id, p.stock_on_hand, p.is_active, p.updated_at
"""
PRICE_LIST_BY_CODE = "SELECT id, code, currency FROM price_lists WHERE code = $1"
PRICE_FOR_UPDATE = """
SELECT price FROM product_prices WHERE product_id = $1 AND price_list_id = $2 FOR UPDATE
"""
UPSERT_PRICE = """
INSERT INTO product_prices (product_id, price_list_id, price) VALUES ($1, $2, $3)
ON CONFLICT (product_id, price_list_id) DO UPDATE SET price = EXCLUDED.price
"""

# -- audit ------------------------------------------------------------------------------------------

INSERT_AUDIT = """
INSERT INTO audit_log (key_id, action, target, before, after, request_id)
VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6)
RETURNING id
"""


async def insert_key(
    conn: asyncpg.Connection, *, name: str, prefix: str, digest: bytes, scopes: list[str]
) -> asyncpg.Record:
    """Store a new key's hash; (id, created_at)."""
    return await conn.fetchrow(INSERT_KEY, name, prefix, digest, scopes)


async def active_key(conn: asyncpg.Connection, prefix: str) -> asyncpg.Record | None:
    """The unrevoked key with this prefix: (id, name, hash, scopes), or None."""
    return await conn.fetchrow(ACTIVE_KEY_BY_PREFIX, prefix)


async def touch_key(conn: asyncpg.Connection, key_id: int, every_s: float) -> None:
    """Record a use of the key, unless one was recorded in the last `every_s` seconds."""
    await conn.execute(TOUCH_KEY, key_id, every_s)


async def revoke_key(
    conn: asyncpg.Connection, key_id: int | None, prefix: str | None
) -> asyncpg.Record | None:
    """Revoke by id or prefix (idempotent); the key's (id, name, prefix, revoked_at), or None if unknown."""
    return await conn.fetchrow(REVOKE_KEY, key_id, prefix)


async def list_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every key, without its hash."""
    return list(await conn.fetch(LIST_KEYS))


async def product_for_update(conn: asyncpg.Connection, product_id: int) -> asyncpg.Record | None:
    """The product row, locked until the transaction ends; None if unknown."""
    return await conn.fetchrow(PRODUCT_FOR_UPDATE, product_id)


async def category_exists(conn: asyncpg.Connection, category_id: int) -> bool:
    """Whether a category with this id exists."""
    return bool(await conn.fetchval(CATEGORY_EXISTS, category_id))


async def update_product(
    conn: asyncpg.Connection, product_id: int, changes: dict[str, Any]
) -> asyncpg.Record:
    """Apply the given editable columns; the new row."""
    args: list[Any] = [product_id]
    for column in ("name", "name_ar", "description", "description_ar", "category_id", "is_active"):
        args += [column in changes, changes.get(column)]
    return await conn.fetchrow(UPDATE_PRODUCT, *args)


async def set_stock(conn: asyncpg.Connection, product_id: int, stock: int) -> asyncpg.Record:
    """Set stock_on_hand; the new row."""
    return await conn.fetchrow(SET_STOCK, product_id, stock)


async def price_list(conn: asyncpg.Connection, code: str) -> asyncpg.Record | None:
    """(id, code, currency) of a price list, or None."""
    return await conn.fetchrow(PRICE_LIST_BY_CODE, code)


async def price_for_update(conn: asyncpg.Connection, product_id: int, price_list_id: int) -> Decimal | None:
    """The current price, locked; None when the product has none in this list."""
    value = await conn.fetchval(PRICE_FOR_UPDATE, product_id, price_list_id)
    return value if value is None else Decimal(value)


async def upsert_price(conn: asyncpg.Connection, product_id: int, price_list_id: int, price: Decimal) -> None:
    """Set a product's price in a list."""
    await conn.execute(UPSERT_PRICE, product_id, price_list_id, price)


async def insert_audit(
    conn: asyncpg.Connection,
    *,
    key_id: int | None,
    action: str,
    target: str,
    before: Any,
    after: Any,
    request_id: str | None,
) -> int:
    """Append one audit row; its id."""
    return int(
        await conn.fetchval(INSERT_AUDIT, key_id, action, target, _json(before), _json(after), request_id)
    )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str).decode()
