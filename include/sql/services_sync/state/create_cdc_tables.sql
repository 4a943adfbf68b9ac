-- CDC mode's state tables (after create_state_tables.sql, in the same schema). Idempotent,
-- serialized like it.
SELECT pg_advisory_xact_lock(hashtext('services_sync.create_state_tables'));

-- CDC mode: one row per capture window of a slot. A window is the slot's pending changes up to
-- upto_lsn (fixed when the window opens), staged in cdc_changes, delivered in batches, then
-- acknowledged (the slot advanced to upto_lsn). At most one window per slot is unfinished; the
-- next run resumes it with the same staged changes, so its batches and keys are the same.
CREATE TABLE IF NOT EXISTS {schema}.cdc_windows (
    window_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot_name        text        NOT NULL,
    upto_lsn         pg_lsn      NOT NULL,
    floor_lsn        pg_lsn,
    snapshot         boolean     NOT NULL DEFAULT false,
    read_snapshot    text,
    status           text        NOT NULL DEFAULT 'capturing'
        CHECK (status IN ('capturing', 'captured', 'acknowledged')),
    changes          integer,
    records          integer,
    deletes          integer,
    truncates        integer,
    per_batch        integer,
    opened_by_run    text        NOT NULL,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    captured_at      timestamptz,
    acknowledged_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS cdc_windows_one_unfinished_idx
    ON {schema}.cdc_windows (slot_name) WHERE status <> 'acknowledged';

-- The changes of a window, in commit order: (commit_lsn, position) identifies each one and is
-- what the batches' idempotency keys are made of. ord is the delivery order after collapsing
-- (NULL: not delivered: an older version of a request, or a delete under the skip policy).
-- Rows of an initial snapshot have commit_lsn 0/0 and sort before every streamed change.
CREATE TABLE IF NOT EXISTS {schema}.cdc_changes (
    window_id   bigint      NOT NULL REFERENCES {schema}.cdc_windows ON DELETE CASCADE,
    commit_lsn  pg_lsn      NOT NULL,
    position    integer     NOT NULL,
    op          text        NOT NULL,
    commit_time timestamptz NOT NULL,
    service_id  text,
    request_id  text,
    row_data    jsonb       NOT NULL,
    ord         integer,
    PRIMARY KEY (window_id, commit_lsn, position)
);
-- Added with the delivery lanes: a change's lane (all changes of one request share a lane, so
-- a lane delivers them in commit order), the window's lane count, and when its batches were
-- built into the outbox (a resumed window is not built again: its batches are there).
ALTER TABLE {schema}.cdc_changes ADD COLUMN IF NOT EXISTS lane integer;
ALTER TABLE {schema}.cdc_windows
    ADD COLUMN IF NOT EXISTS lanes    integer,
    ADD COLUMN IF NOT EXISTS built_at timestamptz;
DROP INDEX IF EXISTS {schema}.cdc_changes_ord_idx;
CREATE INDEX IF NOT EXISTS cdc_changes_lane_idx ON {schema}.cdc_changes (window_id, lane, ord)
    WHERE ord IS NOT NULL;
