-- The service's sync schedule (server/sync/schedule.py): the slots its processes have claimed. A process
-- starts a scheduled run only after claiming its slot with one conditional UPDATE of this row, so across
-- processes and instances each slot is taken once (the sync's advisory lock still keeps runs apart).
ALTER TABLE sync_state
    ADD COLUMN schedule_incremental_at timestamptz,  -- when the last incremental slot was claimed
    ADD COLUMN schedule_full_slot      timestamptz;  -- the last daily full slot claimed (its UTC time)
