-- Search (`q`) filters on lower(name), lower(sku) and lower(name_ar) with LIKE '%…%', OR'ed together.
-- 0001 indexed name_ar itself, not lower(name_ar): with one arm of the OR unindexable the planner could
-- not combine the three trigram indexes (BitmapOr) and scanned every active product (a one-SKU search:
-- 214 ms at 200,000 products; docs/query-plans.md). The Arabic index now matches the query's expression.
-- When pg_trgm became available after 0001 ran, the other two are created here as well.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        DROP INDEX IF EXISTS products_name_ar_trgm_idx;
        CREATE INDEX products_name_ar_trgm_idx ON products USING gin (lower(name_ar) gin_trgm_ops)
            WHERE is_active;
        CREATE INDEX IF NOT EXISTS products_name_trgm_idx ON products USING gin (lower(name) gin_trgm_ops)
            WHERE is_active;
        CREATE INDEX IF NOT EXISTS products_sku_trgm_idx ON products USING gin (lower(sku) gin_trgm_ops)
            WHERE is_active;
    END IF;
END
$$;

-- `in_stock=false` (about 15 % of a catalog): its count and its name-sorted pages read this small index
-- instead of scanning every active product (`in_stock=true` has products_in_stock_idx since 0001).
CREATE INDEX products_out_of_stock_idx ON products (name, id) WHERE is_active AND stock_on_hand <= 0;
