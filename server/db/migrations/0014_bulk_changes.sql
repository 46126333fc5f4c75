-- Bulk changes: a writer that no reader waits for (the Zoho sync: its batches are read by nobody right
-- after they commit) sets `catalog.bulk = 'on'` on its session; each change it makes is then notified as
-- `version:topic:bulk`. A process whose list index is behind on bulk changes only answers from the index as
-- of the version it has applied (for at most CATALOG_INDEX_STALE_MS) instead of making a request wait for
-- the catch-up (server/catalog/feed.py). Every other change is notified as before (`version:topic`).

CREATE OR REPLACE FUNCTION catalog_record_change(changed_tbl text, changed_ids integer[], topic text)
    RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint;
BEGIN
    UPDATE catalog_state SET version = version + 1, changed_at = clock_timestamp()
        RETURNING version INTO new_version;
    INSERT INTO catalog_changes (version, tbl, ids) VALUES (new_version, changed_tbl, changed_ids);
    IF new_version % 1000 = 0 THEN
        PERFORM catalog_changes_prune(10000);
    END IF;
    IF coalesce(current_setting('catalog.bulk', true), '') = 'on' THEN
        PERFORM pg_notify('catalog', new_version::text || ':' || topic || ':bulk');
    ELSE
        PERFORM pg_notify('catalog', new_version::text || ':' || topic);
    END IF;
END
$$;
