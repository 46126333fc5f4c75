"""SQL of orders: placing (locks, conditional stock decrement), idempotency keys, history, cancelling.

Lock order, the same in every write: the (user, key) advisory lock, then products by id (ascending), then
the order row, and the products' UPDATE last, because its statement trigger takes the one catalog_state row
(server/db/migrations/0005): held from there to the commit, it serialises writers for as short as possible.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import asyncpg

# ---- idempotency keys ------------------------------------------------------------------------------

# The (user, key) lock, transaction-level (released at commit or rollback: a crashed request never holds
# a key), and the key's live answer when the lock was free. The statement's snapshot predates the lock, so
# a request that committed the key in between is not seen here; SAVE_KEY_AND_TAKE_STOCK catches that.
LOCK_AND_FIND_KEY = """
SELECT l.locked, k.request_hash, k.status, k.body
FROM (SELECT pg_try_advisory_xact_lock(hashtextextended($2::text, $1::bigint)) AS locked) l
LEFT JOIN idempotency_keys k ON l.locked AND k.user_id = $1 AND k.key = $2 AND k.expires_at > now()
"""

PURGE_KEYS = """
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT $1))
"""

# ---- placing -----------------------------------------------------------------------------------------

# Locks the ordered products in id order (ORDER BY runs below the row-locking step), whatever the order
# of the lines: two orders over the same products queue instead of deadlocking.
LOCK_PRODUCTS = """
SELECT p.id, p.zoho_item_id, p.sku, p.name, p.name_ar, p.stock_on_hand, p.is_active, pp.price, pl.currency
FROM products p
LEFT JOIN price_lists pl ON pl.code = $2
LEFT JOIN product_prices pp ON pp.product_id = p.id AND pp.price_list_id = pl.id
WHERE p.id = ANY($1::int[])
ORDER BY p.id
FOR UPDATE OF p
"""

# The order, its lines (price snapshot; totals in numeric) and its outbox row, in one statement.
INSERT_ORDER = """
WITH v AS (
    SELECT * FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::numeric[])
        WITH ORDINALITY AS v(product_id, zoho_item_id, sku, name, name_ar, quantity, unit_price, line_no)
), o AS (
    INSERT INTO orders (user_id, currency, total, item_count, notes,
                        delivery_name, delivery_phone, delivery_address, delivery_city)
    SELECT $1, $2, sum(v.quantity * v.unit_price), sum(v.quantity), $10, $11, $12, $13, $14 FROM v
    RETURNING id, total, created_at, updated_at
), l AS (
    INSERT INTO order_lines (order_id, line_no, product_id, zoho_item_id, sku, name, name_ar, quantity,
                             unit_price, line_total)
    SELECT o.id, v.line_no, v.product_id, v.zoho_item_id, v.sku, v.name, v.name_ar, v.quantity,
           v.unit_price, v.quantity * v.unit_price
    FROM o, v
), b AS (
    INSERT INTO order_outbox (order_id) SELECT id FROM o
)
SELECT id, total, created_at, updated_at FROM o
"""

# The key's answer, then the stock, in the last statement before the commit. The key is written only if it
# is free (an expired row not yet purged is replaced); when a live row appeared since LOCK_AND_FIND_KEY no
# stock is taken, and the caller rolls back and replays. The decrement stays conditional as a last guard
# (the rows are locked and were checked): the caller checks that every product was decremented.
SAVE_KEY_AND_TAKE_STOCK = """
WITH k AS (
    INSERT INTO idempotency_keys (user_id, key, request_hash, status, body, order_id, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
    ON CONFLICT (user_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, body = EXCLUDED.body,
        order_id = EXCLUDED.order_id, created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at <= now()
    RETURNING 1
)
UPDATE products p SET stock_on_hand = p.stock_on_hand - v.quantity, updated_at = now()
FROM unnest($8::int[], $9::int[]) AS v(id, quantity)
WHERE p.id = v.id AND p.stock_on_hand >= v.quantity AND EXISTS (SELECT 1 FROM k)
"""

PUT_BACK_STOCK = """
UPDATE products p SET stock_on_hand = p.stock_on_hand + v.quantity, updated_at = now()
FROM (SELECT product_id AS id, sum(quantity)::int AS quantity FROM order_lines WHERE order_id = $1
      GROUP BY product_id) v
WHERE p.id = v.id
"""

# ---- the push to Zoho (server/orders/outbox.py) --------------------------------------------------------

# One due order, locked for as long as the worker talks to Zoho: SKIP LOCKED lets other processes take
# the next one instead of waiting, and a process that dies releases it with its connection.
CLAIM_DUE = """
SELECT b.order_id, b.attempts, o.created_at, o.notes, o.delivery_name, o.delivery_phone,
       o.delivery_address, o.delivery_city,
       (SELECT json_agg(json_build_object('item_id', l.zoho_item_id, 'quantity', l.quantity,
                                          'rate', l.unit_price, 'name', l.name) ORDER BY l.line_no)
        FROM order_lines l WHERE l.order_id = b.order_id)::text AS lines
FROM order_outbox b JOIN orders o ON o.id = b.order_id
WHERE b.state = 'pending' AND b.next_attempt_at <= now()
ORDER BY b.next_attempt_at, b.order_id
LIMIT 1
FOR UPDATE OF b SKIP LOCKED
"""

MARK_SENT = """
WITH o AS (UPDATE orders SET status = 'confirmed', updated_at = now() WHERE id = $1 AND status = 'pending')
UPDATE order_outbox SET state = 'sent', zoho_salesorder_id = $2, attempts = attempts + 1, last_error = NULL,
                        sent_at = now(), updated_at = now()
WHERE order_id = $1
"""

MARK_FAILED = """
UPDATE order_outbox SET attempts = attempts + 1, last_error = left($2, 1000),
                        next_attempt_at = now() + make_interval(secs => $3), updated_at = now()
WHERE order_id = $1
"""

# ---- reading -----------------------------------------------------------------------------------------

_ORDER_COLUMNS = """
o.id, o.status, o.currency, o.total, o.item_count, o.notes, o.delivery_name, o.delivery_phone,
o.delivery_address, o.delivery_city, o.created_at, o.updated_at, o.cancelled_at,
b.state AS zoho_state, b.zoho_salesorder_id,
(SELECT json_agg(json_build_object(
        'product_id', l.product_id, 'sku', l.sku, 'name', l.name, 'name_ar', l.name_ar,
        'quantity', l.quantity, 'unit_price', l.unit_price::text, 'line_total', l.line_total::text)
    ORDER BY l.line_no)
 FROM order_lines l WHERE l.order_id = o.id)::text AS lines
FROM orders o
LEFT JOIN order_outbox b ON b.order_id = o.id
"""

# Newest first, keyset on id: one index range scan of orders_user_id_idx, lines aggregated per row.
HISTORY = f"""
SELECT {_ORDER_COLUMNS}
WHERE o.user_id = $1 AND o.id < $2
ORDER BY o.id DESC
LIMIT $3
"""

# Another user's order is simply not found (never a 403 that would confirm it exists).
ONE = f"SELECT {_ORDER_COLUMNS} WHERE o.id = $1 AND o.user_id = $2"

# ---- cancelling --------------------------------------------------------------------------------------

LOCK_ORDER = "SELECT status FROM orders WHERE id = $1 AND user_id = $2 FOR UPDATE"

LOCK_ORDER_PRODUCTS = """
SELECT id FROM products WHERE id IN (SELECT product_id FROM order_lines WHERE order_id = $1)
ORDER BY id FOR UPDATE
"""

# NOWAIT: a worker pushing this order to Zoho holds the row; the shopper is told to retry (409).
LOCK_OUTBOX = "SELECT state FROM order_outbox WHERE order_id = $1 FOR UPDATE NOWAIT"

CANCEL = """
WITH b AS (UPDATE order_outbox SET state = 'cancelled', updated_at = now()
           WHERE order_id = $1 AND state = 'pending')
UPDATE orders SET status = 'cancelled', cancelled_at = now(), updated_at = now() WHERE id = $1
"""


async def lock_and_find_key(conn: asyncpg.Connection, user_id: int, key: str) -> asyncpg.Record:
    """(locked, request_hash, status, body): locked False when another request holds the key; the
    answer stored under the key when there is one."""
    row: asyncpg.Record = await conn.fetchrow(LOCK_AND_FIND_KEY, user_id, key)
    return row


async def save_key_and_take_stock(
    conn: asyncpg.Connection,
    *,
    user_id: int,
    key: str,
    request_hash: bytes,
    body: bytes,
    order_id: int,
    ttl_s: int,
    stock: dict[int, int],
) -> int:
    """Store the answer under the key and decrement the stock; how many products were decremented
    (fewer than `stock` when the key was taken meanwhile: roll back)."""
    status = await conn.execute(
        SAVE_KEY_AND_TAKE_STOCK,
        user_id,
        key,
        request_hash,
        201,
        body,
        order_id,
        float(ttl_s),
        list(stock),
        list(stock.values()),
    )
    return int(status.split()[-1])


async def purge_keys(conn: asyncpg.Connection, limit: int) -> int:
    """Delete up to `limit` expired keys; how many went."""
    status = await conn.execute(PURGE_KEYS, limit)
    return int(status.split()[-1])


async def lock_products(
    conn: asyncpg.Connection, ids: Sequence[int], price_list: str
) -> list[asyncpg.Record]:
    """The products of `ids` that exist, locked in id order, with their consumer price and currency."""
    return list(await conn.fetch(LOCK_PRODUCTS, list(ids), price_list))


async def insert_order(
    conn: asyncpg.Connection,
    *,
    user_id: int,
    currency: str,
    lines: Sequence[tuple[int, str | None, str | None, str, str | None, int, Decimal]],
    extra: Sequence[str | None],
) -> asyncpg.Record:
    """Insert the order, its lines and its outbox row; (id, total, created_at, updated_at)."""
    columns = list(zip(*lines, strict=True))
    row: asyncpg.Record = await conn.fetchrow(
        INSERT_ORDER, user_id, currency, *(list(c) for c in columns), *extra
    )
    return row


async def history(conn: asyncpg.Connection, user_id: int, before_id: int, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` orders of the user with an id below `before_id`, newest first, lines included."""
    return list(await conn.fetch(HISTORY, user_id, before_id, limit))


async def one(conn: asyncpg.Connection, order_id: int, user_id: int) -> asyncpg.Record | None:
    """The user's order `order_id`, or None (also when it is another user's)."""
    row: asyncpg.Record | None = await conn.fetchrow(ONE, order_id, user_id)
    return row


async def lock_order(conn: asyncpg.Connection, order_id: int, user_id: int) -> str | None:
    """Lock the user's order; its status, or None when there is no such order of this user."""
    status: str | None = await conn.fetchval(LOCK_ORDER, order_id, user_id)
    return status


async def lock_order_products(conn: asyncpg.Connection, order_id: int) -> None:
    """Lock the order's products in id order (before any stock update, like placing does)."""
    await conn.fetch(LOCK_ORDER_PRODUCTS, order_id)


async def lock_outbox(conn: asyncpg.Connection, order_id: int) -> bool:
    """Lock the order's outbox row; False when a worker is pushing it right now."""
    try:
        await conn.fetchval(LOCK_OUTBOX, order_id)
    except asyncpg.exceptions.LockNotAvailableError:
        return False
    return True


async def cancel(conn: asyncpg.Connection, order_id: int) -> None:
    """Mark the order cancelled, its push to Zoho dropped, and put its stock back (stock last)."""
    await conn.execute(CANCEL, order_id)
    await conn.execute(PUT_BACK_STOCK, order_id)


async def claim_due(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """Lock one due outbox row (this transaction), with what the sales order needs; None: nothing due."""
    row: asyncpg.Record | None = await conn.fetchrow(CLAIM_DUE)
    return row


async def mark_sent(conn: asyncpg.Connection, order_id: int, salesorder_id: str) -> None:
    """The order is in Zoho: record the sales order and confirm the order."""
    await conn.execute(MARK_SENT, order_id, salesorder_id)


async def mark_failed(conn: asyncpg.Connection, order_id: int, error: str, retry_in_s: float) -> None:
    """Count a failed attempt and when to try again."""
    await conn.execute(MARK_FAILED, order_id, error, retry_in_s)
