-- Zoho Inventory sync (server/sync): its runs, its state, and what it remembers about each Zoho item.
-- None of these tables is a catalog table: writing them bumps no catalog version (no triggers here).

-- Price lists that mirror a Zoho price book (NULL: ours, e.g. the consumer list fed by the item rate).
ALTER TABLE price_lists ADD COLUMN zoho_pricebook_id text UNIQUE;

-- One row per run. A run that dies without recording its end stays `running` until the next run takes
-- the lock and marks it `failed` (interrupted): only the lock holder can be running.
CREATE TABLE sync_runs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('incremental', 'full')),
    status              text NOT NULL DEFAULT 'running'
                        CHECK (status IN ('running', 'succeeded', 'failed', 'paused')),
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    resumed             boolean NOT NULL DEFAULT false,
    items_seen          integer NOT NULL DEFAULT 0,
    items_changed       integer NOT NULL DEFAULT 0,
    items_invalid       integer NOT NULL DEFAULT 0,
    items_deactivated   integer NOT NULL DEFAULT 0,
    categories_changed  integer NOT NULL DEFAULT 0,
    price_lists_changed integer NOT NULL DEFAULT 0,
    prices_changed      integer NOT NULL DEFAULT 0,
    images_fetched      integer NOT NULL DEFAULT 0,
    images_removed      integer NOT NULL DEFAULT 0,
    images_failed       integer NOT NULL DEFAULT 0,
    images_deferred     integer NOT NULL DEFAULT 0,
    calls               integer NOT NULL DEFAULT 0,
    throttles           integer NOT NULL DEFAULT 0,
    watermark_before    timestamptz,
    watermark_after     timestamptz,
    error               text
);
CREATE INDEX sync_runs_started_idx ON sync_runs (started_at DESC, id DESC);

-- One row: the items watermark (every item Zoho modified before it is applied), the cursor of an
-- unfinished sweep over Zoho's item list (written with each batch, so a killed or paused run resumes at
-- the first page it did not apply), and when the last full reconcile finished (for the schedule).
CREATE TABLE sync_state (
    singleton       boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    items_watermark timestamptz,
    sweep_cursor    jsonb,
    last_full_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sync_state DEFAULT VALUES;

-- Numbers sweeps; sync_items.seen_sweep = the last sweep that listed the item (full reconcile).
CREATE SEQUENCE sync_sweep_seq;

-- Per Zoho item: when Zoho last modified it (as applied; NULL while its record is invalid), the last sweep
-- that listed it, and its image: image_key is Zoho's image id and name now, image_done the key whose
-- outcome (file written, rejected, missing in Zoho) is settled. They differ while an image waits to be
-- fetched or removed; waiting images go oldest first (image_wanted_at).
CREATE TABLE sync_items (
    zoho_item_id    text PRIMARY KEY,
    modified_at     timestamptz,
    seen_sweep      bigint NOT NULL,
    image_key       text,
    image_done      text,
    image_state     text CHECK (image_state IN ('stored', 'rejected', 'missing', 'failed', 'removed')),
    image_wanted_at timestamptz,
    image_attempts  smallint NOT NULL DEFAULT 0
);
CREATE INDEX sync_items_image_pending_idx ON sync_items (image_wanted_at, zoho_item_id)
    WHERE image_key IS DISTINCT FROM image_done;
CREATE INDEX sync_items_seen_idx ON sync_items (seen_sweep);
