-- An UPDATE of products tells readers whether the identity map changed (a zoho_item_id, is_active or id:
-- topic `products`) or only the rows' data (`product_data`). 0005 found that by joining the statement's
-- old and new rows on id. Transition tables have no index, and the planner, which cannot know their size
-- when the function's plan is made, could loop over one for each row of the other: an UPDATE of 50,000
-- products then ran for minutes (2.5 billion comparisons) where its own work takes ~4 s. The same answer
-- in one pass: the identity changed if some (id, zoho_item_id, is_active) of the new rows is not among the
-- old rows' (a set difference, hashed or sorted: linear, whatever the plan).

CREATE OR REPLACE FUNCTION catalog_change_product_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed integer[];
    identity_changed boolean;
BEGIN
    SELECT EXISTS (
        SELECT id, zoho_item_id, is_active FROM new_rows
        EXCEPT
        SELECT id, zoho_item_id, is_active FROM old_rows
    ) INTO identity_changed;
    SELECT coalesce(array_agg(DISTINCT id), '{}')
    FROM (SELECT id FROM old_rows UNION ALL SELECT id FROM new_rows) r INTO changed;
    PERFORM catalog_record_change(
        'products', changed, CASE WHEN identity_changed THEN 'products' ELSE 'product_data' END
    );
    RETURN NULL;
END
$$;
