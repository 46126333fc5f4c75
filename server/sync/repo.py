"""Sync SQL (constants only; server/sync/writer.py and runs.py run them).

Catalog writes go through per-transaction staging tables: a batch is COPYed in, compared with the catalog
(`IS DISTINCT FROM` on every synced column), and only then, when the comparison found rows, is the UPDATE
or INSERT executed: the catalog triggers fire per statement, even for a statement that matched nothing, so
a statement never run is what keeps an unchanged batch from bumping the catalog version.
"""

from __future__ import annotations

# --- staging (temporary, private to the connection, emptied at each commit) -------------------------------

CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS stage_items (
    zoho_item_id text NOT NULL, sku text, name text NOT NULL, name_ar text, description text,
    description_ar text, zoho_category_id text, unit text, stock_on_hand integer NOT NULL,
    is_active boolean NOT NULL, created_at timestamptz, modified_at timestamptz NOT NULL, image_key text
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_prices (
    zoho_item_id text NOT NULL, price_list_id integer NOT NULL, price numeric(14, 2)
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_categories (
    zoho_category_id text NOT NULL, name text NOT NULL, name_ar text, parent_zoho_id text,
    sort_order integer NOT NULL, is_active boolean NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_ids (zoho_item_id text NOT NULL) ON COMMIT DELETE ROWS;
CREATE INDEX IF NOT EXISTS stage_prices_item ON stage_prices (zoho_item_id);
"""
# The run's catalog changes are notified as bulk (0014_bulk_changes.sql, server/catalog/feed.py).
BULK_CHANGES = "SET catalog.bulk = 'on'"
# Why stage_prices has an index: a whole price book is checked against its list (COUNT_PRICES_NOT_STAGED,
# an anti-join). When the list is new, or grew in this run, product_prices' statistics still say it holds
# (almost) no rows, so the planner loops over the list's rows and, without the index, scans every staged
# row for each: 20,000 x 20,000 rows, 35 s of a core on a first import (README, Zoho sync). With it, each
# loop is one probe (~0.1 s in all), whatever the statistics say.
STAGE_ITEMS_COLUMNS = (
    "zoho_item_id",
    "sku",
    "name",
    "name_ar",
    "description",
    "description_ar",
    "zoho_category_id",
    "unit",
    "stock_on_hand",
    "is_active",
    "created_at",
    "modified_at",
    "image_key",
)
STAGE_PRICES_COLUMNS = ("zoho_item_id", "price_list_id", "price")
STAGE_CATEGORIES_COLUMNS = (
    "zoho_category_id",
    "name",
    "name_ar",
    "parent_zoho_id",
    "sort_order",
    "is_active",
)

# A page is ~200 staged rows: probing the catalog's unique indexes 200 times costs well under a
# millisecond, but the planner, pricing random reads high, hashes the whole products table instead (20 ms a
# page at 20,000 products, and growing with the catalog). For this batch's transaction only.
# synchronous_commit off: a crash may lose the last batches whole, cursor included, never a part of one, so
# the resumed sweep simply reads them again; the commit no longer waits for the WAL flush.
PAGE_PLANS = (
    "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; SET LOCAL synchronous_commit = off"
)

# --- products -------------------------------------------------------------------------------------------

# (new, changed, unknown category) of the staged batch.
COUNT_PRODUCT_CHANGES = """
SELECT (SELECT count(*) FROM stage_items s
        WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.zoho_item_id = s.zoho_item_id)) AS new,
       (SELECT count(*)
        FROM stage_items s
        LEFT JOIN categories c ON c.zoho_category_id = s.zoho_category_id
        JOIN products p ON p.zoho_item_id = s.zoho_item_id
        WHERE (p.sku, p.name, p.name_ar, p.description, p.description_ar, p.category_id, p.unit,
               p.stock_on_hand, p.is_active)
              IS DISTINCT FROM
              (s.sku, s.name, s.name_ar, s.description, s.description_ar, c.id, s.unit, s.stock_on_hand,
               s.is_active)) AS changed,
       (SELECT count(*) FROM stage_items s
        WHERE s.zoho_category_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM categories c WHERE c.zoho_category_id = s.zoho_category_id))
        AS unknown_category
"""
UPDATE_PRODUCTS = """
UPDATE products p
SET sku = s.sku, name = s.name, name_ar = s.name_ar, description = s.description,
    description_ar = s.description_ar, category_id = c.id, unit = s.unit, stock_on_hand = s.stock_on_hand,
    is_active = s.is_active, updated_at = now()
FROM stage_items s
LEFT JOIN categories c ON c.zoho_category_id = s.zoho_category_id
WHERE p.zoho_item_id = s.zoho_item_id
  AND (p.sku, p.name, p.name_ar, p.description, p.description_ar, p.category_id, p.unit, p.stock_on_hand,
       p.is_active)
      IS DISTINCT FROM
      (s.sku, s.name, s.name_ar, s.description, s.description_ar, c.id, s.unit, s.stock_on_hand, s.is_active)
"""
INSERT_PRODUCTS = """
INSERT INTO products (zoho_item_id, sku, name, name_ar, description, description_ar, category_id, unit,
                      stock_on_hand, is_active, created_at)
SELECT s.zoho_item_id, s.sku, s.name, s.name_ar, s.description, s.description_ar, c.id, s.unit,
       s.stock_on_hand, s.is_active, coalesce(s.created_at, now())
FROM stage_items s
LEFT JOIN categories c ON c.zoho_category_id = s.zoho_category_id
WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.zoho_item_id = s.zoho_item_id)
ON CONFLICT (zoho_item_id) DO NOTHING
"""

# The sync's own memory of each item ($1: the sweep): no catalog trigger, rewritten only when it differs.
UPSERT_SYNC_ITEMS = """
INSERT INTO sync_items AS si (zoho_item_id, modified_at, seen_sweep, image_key, image_wanted_at)
SELECT s.zoho_item_id, s.modified_at, $1, s.image_key, s.modified_at FROM stage_items s
ON CONFLICT (zoho_item_id) DO UPDATE
SET modified_at = excluded.modified_at, seen_sweep = excluded.seen_sweep, image_key = excluded.image_key,
    image_wanted_at = CASE WHEN si.image_key IS DISTINCT FROM excluded.image_key
                           THEN excluded.modified_at ELSE si.image_wanted_at END,
    image_attempts = CASE WHEN si.image_key IS DISTINCT FROM excluded.image_key
                          THEN 0 ELSE si.image_attempts END
WHERE (si.modified_at, si.seen_sweep, si.image_key)
      IS DISTINCT FROM (excluded.modified_at, excluded.seen_sweep, excluded.image_key)
"""
# Invalid records whose item id is readable ($2) still count as listed by Zoho: never deactivated for it.
MARK_SEEN = """
INSERT INTO sync_items AS si (zoho_item_id, seen_sweep)
SELECT unnest($2::text[]), $1
ON CONFLICT (zoho_item_id) DO UPDATE SET seen_sweep = excluded.seen_sweep
WHERE si.seen_sweep IS DISTINCT FROM excluded.seen_sweep
"""

# Full reconcile ($1: the sweep that listed every Zoho item): active products it did not list.
COUNT_UNLISTED = """
SELECT count(*) FROM products p
WHERE p.is_active
  AND NOT EXISTS (SELECT 1 FROM sync_items si WHERE si.zoho_item_id = p.zoho_item_id AND si.seen_sweep >= $1)
"""
DEACTIVATE_UNLISTED = """
UPDATE products p SET is_active = false, updated_at = now()
WHERE p.is_active
  AND NOT EXISTS (SELECT 1 FROM sync_items si WHERE si.zoho_item_id = p.zoho_item_id AND si.seen_sweep >= $1)
"""

# --- prices (staged: item, list, price; a NULL price removes the row) -----------------------------------

COUNT_PRICE_CHANGES = """
SELECT count(*) FILTER (WHERE pp.product_id IS NULL AND s.price IS NOT NULL) AS new,
       count(*) FILTER (WHERE pp.product_id IS NOT NULL AND s.price IS NOT NULL
                        AND pp.price IS DISTINCT FROM s.price) AS changed,
       count(*) FILTER (WHERE pp.product_id IS NOT NULL AND s.price IS NULL) AS removed
FROM stage_prices s
JOIN products p ON p.zoho_item_id = s.zoho_item_id
LEFT JOIN product_prices pp ON pp.product_id = p.id AND pp.price_list_id = s.price_list_id
"""
UPDATE_PRICES = """
UPDATE product_prices pp SET price = s.price
FROM stage_prices s JOIN products p ON p.zoho_item_id = s.zoho_item_id
WHERE pp.product_id = p.id AND pp.price_list_id = s.price_list_id
  AND s.price IS NOT NULL AND pp.price IS DISTINCT FROM s.price
"""
INSERT_PRICES = """
INSERT INTO product_prices (product_id, price_list_id, price)
SELECT p.id, s.price_list_id, s.price
FROM stage_prices s JOIN products p ON p.zoho_item_id = s.zoho_item_id
WHERE s.price IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM product_prices pp
                  WHERE pp.product_id = p.id AND pp.price_list_id = s.price_list_id)
ON CONFLICT (product_id, price_list_id) DO NOTHING
"""
DELETE_PRICES = """
DELETE FROM product_prices pp
USING stage_prices s JOIN products p ON p.zoho_item_id = s.zoho_item_id
WHERE pp.product_id = p.id AND pp.price_list_id = s.price_list_id AND s.price IS NULL
"""
# A price book read in full: its list's prices of products the book no longer lists ($1: the list).
COUNT_PRICES_NOT_STAGED = """
SELECT count(*) FROM product_prices pp
WHERE pp.price_list_id = $1
  AND NOT EXISTS (SELECT 1 FROM stage_prices s JOIN products p ON p.zoho_item_id = s.zoho_item_id
                  WHERE p.id = pp.product_id AND s.price_list_id = $1)
"""
DELETE_PRICES_NOT_STAGED = """
DELETE FROM product_prices pp
WHERE pp.price_list_id = $1
  AND NOT EXISTS (SELECT 1 FROM stage_prices s JOIN products p ON p.zoho_item_id = s.zoho_item_id
                  WHERE p.id = pp.product_id AND s.price_list_id = $1)
"""

# --- price lists ----------------------------------------------------------------------------------------

PRICE_LISTS = "SELECT id, code, name, currency, zoho_pricebook_id FROM price_lists"
INSERT_PRICE_LIST = """
INSERT INTO price_lists (code, name, currency, consumer_visible, sort_order, zoho_pricebook_id)
VALUES ($1, $2, $3, $4, coalesce((SELECT max(sort_order) + 1 FROM price_lists), 0), $5)
RETURNING id
"""
UPDATE_PRICE_LIST = "UPDATE price_lists SET name = $2, currency = $3 WHERE id = $1"

# --- categories -----------------------------------------------------------------------------------------

COUNT_NEW_CATEGORIES = """
SELECT count(*) FROM stage_categories s
WHERE NOT EXISTS (SELECT 1 FROM categories c WHERE c.zoho_category_id = s.zoho_category_id)
"""
INSERT_CATEGORIES = """
INSERT INTO categories (zoho_category_id, name, name_ar, sort_order, is_active)
SELECT s.zoho_category_id, s.name, s.name_ar, s.sort_order, s.is_active FROM stage_categories s
WHERE NOT EXISTS (SELECT 1 FROM categories c WHERE c.zoho_category_id = s.zoho_category_id)
ON CONFLICT (zoho_category_id) DO NOTHING
"""
COUNT_CHANGED_CATEGORIES = """
SELECT count(*)
FROM categories c
JOIN stage_categories s ON s.zoho_category_id = c.zoho_category_id
LEFT JOIN categories par ON par.zoho_category_id = s.parent_zoho_id
WHERE (c.name, c.name_ar, c.parent_id, c.sort_order, c.is_active)
      IS DISTINCT FROM (s.name, s.name_ar, par.id, s.sort_order, s.is_active)
"""
UPDATE_CATEGORIES = """
UPDATE categories c
SET name = s.name, name_ar = s.name_ar, parent_id = par.id, sort_order = s.sort_order, is_active = s.is_active
FROM stage_categories s
LEFT JOIN categories par ON par.zoho_category_id = s.parent_zoho_id
WHERE c.zoho_category_id = s.zoho_category_id
  AND (c.name, c.name_ar, c.parent_id, c.sort_order, c.is_active)
      IS DISTINCT FROM (s.name, s.name_ar, par.id, s.sort_order, s.is_active)
"""
# Zoho's category list is always read whole: active categories it no longer has.
COUNT_GONE_CATEGORIES = """
SELECT count(*) FROM categories c
WHERE c.is_active
  AND NOT EXISTS (SELECT 1 FROM stage_categories s WHERE s.zoho_category_id = c.zoho_category_id)
"""
DEACTIVATE_GONE_CATEGORIES = """
UPDATE categories c SET is_active = false
WHERE c.is_active
  AND NOT EXISTS (SELECT 1 FROM stage_categories s WHERE s.zoho_category_id = c.zoho_category_id)
"""

# --- state, cursor, watermark ---------------------------------------------------------------------------

STATE = "SELECT items_watermark, sweep_cursor, last_full_at FROM sync_state"
NEXT_SWEEP = "SELECT nextval('sync_sweep_seq')"
SAVE_CURSOR = "UPDATE sync_state SET sweep_cursor = $1::jsonb, updated_at = now()"
# The sweep reached the old watermark (or the end of the list): its newest time becomes the watermark.
FINISH_SWEEP = """
UPDATE sync_state
SET items_watermark = CASE WHEN $1::timestamptz IS NULL THEN items_watermark
                           ELSE greatest(items_watermark, $1::timestamptz) END,
    sweep_cursor = NULL,
    last_full_at = CASE WHEN $2 THEN now() ELSE last_full_at END,
    updated_at = now()
RETURNING items_watermark
"""

# --- images ---------------------------------------------------------------------------------------------

# Images removed in Zoho (no call needed), and images to fetch, oldest change first.
PENDING_REMOVALS = """
SELECT zoho_item_id, image_key FROM sync_items
WHERE image_key IS NULL AND image_done IS NOT NULL
ORDER BY image_wanted_at NULLS FIRST, zoho_item_id
LIMIT $1
"""
PENDING_FETCHES = """
SELECT zoho_item_id, image_key FROM sync_items
WHERE image_key IS NOT NULL AND image_key IS DISTINCT FROM image_done
ORDER BY image_wanted_at NULLS FIRST, zoho_item_id
LIMIT $1
"""
COUNT_PENDING_IMAGES = "SELECT count(*) FROM sync_items WHERE image_key IS DISTINCT FROM image_done"
# Settle an image ($2: the key that was handled; a concurrent change of the key keeps it pending).
SETTLE_IMAGE = """
UPDATE sync_items SET image_done = image_key, image_state = $3, image_attempts = 0
WHERE zoho_item_id = $1 AND image_key IS NOT DISTINCT FROM $2
"""
# A fetch that failed in transit: retried by later runs (behind newer changes), settled after $2 tries.
IMAGE_FAILED = """
UPDATE sync_items
SET image_attempts = image_attempts + 1,
    image_done = CASE WHEN image_attempts + 1 >= $2 THEN image_key ELSE image_done END,
    image_state = CASE WHEN image_attempts + 1 >= $2 THEN 'failed' ELSE image_state END,
    image_wanted_at = now()
WHERE zoho_item_id = $1
"""

# --- runs -----------------------------------------------------------------------------------------------

INTERRUPT_STALE_RUNS = """
UPDATE sync_runs SET status = 'failed', finished_at = now(), error = 'interrupted (the process stopped)'
WHERE status = 'running'
"""
START_RUN = """
INSERT INTO sync_runs (kind, resumed, watermark_before) VALUES ($1, $2, $3) RETURNING id, started_at
"""
UPDATE_RUN = """
UPDATE sync_runs
SET status = $2, finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE now() END,
    items_seen = $3, items_changed = $4, items_invalid = $5, items_deactivated = $6, categories_changed = $7,
    price_lists_changed = $8, prices_changed = $9, images_fetched = $10, images_removed = $11,
    images_failed = $12, images_deferred = $13, calls = $14, throttles = $15, watermark_after = $16,
    error = $17
WHERE id = $1
"""
RUN_BY_ID = "SELECT * FROM sync_runs WHERE id = $1"
RUNS_PAGE = "SELECT * FROM sync_runs ORDER BY id DESC LIMIT $1 OFFSET $2"
RUNS_COUNT = "SELECT count(*) FROM sync_runs"

# --- schedule (server/sync/schedule.py) ------------------------------------------------------------------
# $1: the daily full run's time of day (interval 'HH:MM'); `slot` is its latest occurrence at or before now,
# in UTC.
SCHEDULE_PLAN = """
WITH slot AS (
    SELECT (date_trunc('day', (now() AT TIME ZONE 'UTC') - $1::interval) + $1::interval)
           AT TIME ZONE 'UTC' AS at
)
SELECT now() AS now, s.schedule_incremental_at, s.schedule_full_slot, s.last_full_at, slot.at AS full_slot,
       r.id AS run_id, r.kind AS run_kind, r.status AS run_status, r.started_at AS run_started_at,
       r.finished_at AS run_finished_at
FROM sync_state s
CROSS JOIN slot
LEFT JOIN LATERAL (SELECT id, kind, status, started_at, finished_at FROM sync_runs ORDER BY id DESC LIMIT 1) r
    ON true
"""
# A slot is claimed by exactly one caller: the row lock orders concurrent UPDATEs, and the second sees the
# first's value and fails the WHERE.
CLAIM_FULL = """
WITH slot AS (
    SELECT (date_trunc('day', (now() AT TIME ZONE 'UTC') - $1::interval) + $1::interval)
           AT TIME ZONE 'UTC' AS at
)
UPDATE sync_state s SET schedule_full_slot = slot.at, schedule_incremental_at = now()
FROM slot
WHERE (s.schedule_full_slot IS NULL OR s.schedule_full_slot < slot.at)
  AND (s.last_full_at IS NULL OR s.last_full_at < slot.at)
RETURNING s.schedule_full_slot
"""
# $1: the interval in seconds.
CLAIM_INCREMENTAL = """
UPDATE sync_state SET schedule_incremental_at = now()
WHERE schedule_incremental_at IS NULL OR schedule_incremental_at <= now() - make_interval(secs => $1)
RETURNING schedule_incremental_at
"""
