-- Stock and price updates are frequent; changes to which products exist (and under which zoho_item_id)
-- are not. Each process keeps a {zoho_item_id: id} map for its image index and reloads it when it sees
-- `version:products`; a plain data update of products now announces `version:product_data` instead, so a
-- stock change no longer makes every process reload the whole map. (Transition tables need one trigger
-- per event, hence the split.)

CREATE FUNCTION bump_catalog_version_for_product_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint;
    identity_changed boolean;
BEGIN
    SELECT EXISTS (
        SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE n.zoho_item_id IS DISTINCT FROM o.zoho_item_id OR n.is_active IS DISTINCT FROM o.is_active
    ) OR (SELECT count(*) FROM old_rows) <> (SELECT count(*) FROM old_rows o JOIN new_rows n ON n.id = o.id)
    INTO identity_changed;
    UPDATE catalog_state SET version = version + 1, changed_at = clock_timestamp()
        RETURNING version INTO new_version;
    PERFORM pg_notify(
        'catalog', new_version::text || CASE WHEN identity_changed THEN ':products' ELSE ':product_data' END
    );
    RETURN NULL;
END
$$;

DROP TRIGGER products_bump ON products;
CREATE TRIGGER products_insert_bump AFTER INSERT OR DELETE OR TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER products_update_bump AFTER UPDATE ON products
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version_for_product_update();
