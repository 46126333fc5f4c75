-- Change feed: which ids each catalog version changed, so a process can update an in-memory index
-- incrementally instead of reloading the catalog.
--
-- Every catalog statement still bumps catalog_state.version and notifies 'version:table' (payloads as in
-- 0001/0002), and now also writes one catalog_changes row for that version, in the same transaction.
-- The bump updates the single catalog_state row, whose lock a writer holds until it commits, so versions
-- are handed out in commit order: once version v is visible, every version below v is visible too.
-- Every version from this migration on has exactly one row, also a statement that matched no row (ids
-- '{}'): a reader proves it has all changes after v when it finds v+1, v+2, ... up to the current version
-- without a hole (repo.changes_since); anything pruned or older than this migration is a gap -> rebuild.
--   ids      products and categories: their ids; product_prices: the product ids of its rows;
--            price_lists, and TRUNCATE of any table: NULL = assume everything changed.
--   UPDATE   ids from both the old and the new rows (covers an id that changed).
-- Bounded: every 1,000th version deletes the rows more than 10,000 versions old (one index range delete;
-- a reader more than 10,000 statements behind rebuilds). catalog_changes_prune(keep) does it on demand.

CREATE TABLE catalog_changes (
    version bigint PRIMARY KEY,
    tbl     text NOT NULL,
    ids     integer[]
);

CREATE FUNCTION catalog_changes_prune(keep bigint) RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM catalog_changes WHERE version <= (SELECT version FROM catalog_state) - keep RETURNING 1
    )
    SELECT count(*) FROM gone
$$;

-- Bump the version, record the change under it, notify; the one writer of catalog_state.version.
CREATE FUNCTION catalog_record_change(changed_tbl text, changed_ids integer[], topic text) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint;
BEGIN
    UPDATE catalog_state SET version = version + 1, changed_at = clock_timestamp()
        RETURNING version INTO new_version;
    INSERT INTO catalog_changes (version, tbl, ids) VALUES (new_version, changed_tbl, changed_ids);
    IF new_version % 1000 = 0 THEN
        PERFORM catalog_changes_prune(10000);
    END IF;
    PERFORM pg_notify('catalog', new_version::text || ':' || topic);
END
$$;

-- categories and products (INSERT/DELETE): the `id` of the transition rows.
CREATE FUNCTION catalog_change_by_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed integer[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT coalesce(array_agg(DISTINCT id), '{}') FROM new_rows INTO changed;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT coalesce(array_agg(DISTINCT id), '{}') FROM old_rows INTO changed;
    ELSE
        SELECT coalesce(array_agg(DISTINCT id), '{}')
        FROM (SELECT id FROM old_rows UNION ALL SELECT id FROM new_rows) r INTO changed;
    END IF;
    PERFORM catalog_record_change(TG_TABLE_NAME, changed, TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- product_prices: the product ids of the transition rows.
CREATE FUNCTION catalog_change_by_product_id() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed integer[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT coalesce(array_agg(DISTINCT product_id), '{}') FROM new_rows INTO changed;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT coalesce(array_agg(DISTINCT product_id), '{}') FROM old_rows INTO changed;
    ELSE
        SELECT coalesce(array_agg(DISTINCT product_id), '{}')
        FROM (SELECT product_id FROM old_rows UNION ALL SELECT product_id FROM new_rows) r INTO changed;
    END IF;
    PERFORM catalog_record_change(TG_TABLE_NAME, changed, TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- UPDATE of products: ids as above; the topic stays 0002's (`products` when the identity map changed).
CREATE FUNCTION catalog_change_product_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed integer[];
    identity_changed boolean;
BEGIN
    SELECT EXISTS (
        SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE n.zoho_item_id IS DISTINCT FROM o.zoho_item_id OR n.is_active IS DISTINCT FROM o.is_active
    ) OR (SELECT count(*) FROM old_rows) <> (SELECT count(*) FROM old_rows o JOIN new_rows n ON n.id = o.id)
    INTO identity_changed;
    SELECT coalesce(array_agg(DISTINCT id), '{}')
    FROM (SELECT id FROM old_rows UNION ALL SELECT id FROM new_rows) r INTO changed;
    PERFORM catalog_record_change(
        'products', changed, CASE WHEN identity_changed THEN 'products' ELSE 'product_data' END
    );
    RETURN NULL;
END
$$;

-- price_lists (any statement) and TRUNCATE of any table: everything may have changed.
CREATE FUNCTION catalog_change_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM catalog_record_change(TG_TABLE_NAME, NULL, TG_TABLE_NAME);
    RETURN NULL;
END
$$;

DROP TRIGGER categories_bump ON categories;
DROP TRIGGER products_insert_bump ON products;
DROP TRIGGER products_update_bump ON products;
DROP TRIGGER price_lists_bump ON price_lists;
DROP TRIGGER product_prices_bump ON product_prices;
DROP FUNCTION bump_catalog_version();
DROP FUNCTION bump_catalog_version_for_product_update();

-- Transition tables need one trigger per event.
CREATE TRIGGER categories_insert_change AFTER INSERT ON categories
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_id();
CREATE TRIGGER categories_update_change AFTER UPDATE ON categories
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_id();
CREATE TRIGGER categories_delete_change AFTER DELETE ON categories
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_id();
CREATE TRIGGER categories_truncate_change AFTER TRUNCATE ON categories
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_all();

CREATE TRIGGER products_insert_change AFTER INSERT ON products
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_id();
CREATE TRIGGER products_update_change AFTER UPDATE ON products
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_product_update();
CREATE TRIGGER products_delete_change AFTER DELETE ON products
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_id();
CREATE TRIGGER products_truncate_change AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_all();

CREATE TRIGGER price_lists_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON price_lists
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_all();

CREATE TRIGGER product_prices_insert_change AFTER INSERT ON product_prices
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_product_id();
CREATE TRIGGER product_prices_update_change AFTER UPDATE ON product_prices
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_product_id();
CREATE TRIGGER product_prices_delete_change AFTER DELETE ON product_prices
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_by_product_id();
CREATE TRIGGER product_prices_truncate_change AFTER TRUNCATE ON product_prices
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_change_all();
