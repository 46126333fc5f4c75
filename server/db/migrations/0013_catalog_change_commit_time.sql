-- When each catalog change committed, so that a process can measure the lag from commit to applied
-- (/metrics catalog_change_lag_seconds) rather than from the notification it heard.
--
-- A trigger at the statement knows the statement's time, not the commit's: a sync batch, or any write
-- that does more in its transaction, commits later. A deferred constraint trigger runs at COMMIT, after
-- every statement of the transaction, so the time it stamps is the commit's (to the microsecond, before the
-- commit record is written; the NOTIFY is delivered after it). It costs one primary-key UPDATE of the row
-- just inserted per catalog statement. Rows older than this migration keep NULL (no lag is measured).

ALTER TABLE catalog_changes ADD COLUMN committed_at timestamptz;

CREATE FUNCTION catalog_change_committed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_changes SET committed_at = clock_timestamp() WHERE version = NEW.version;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER catalog_changes_committed AFTER INSERT ON catalog_changes
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION catalog_change_committed();
