-- The pipeline's own state tables, in its own schema (the schema name is a validated
-- identifier composed with psycopg.sql, never a value). Idempotent; serialized by an advisory
-- lock because CREATE ... IF NOT EXISTS can still race between two runs starting at once.
-- The schema itself is created beforehand, only when missing (create_state_schema.sql).
SELECT pg_advisory_xact_lock(hashtext('services_sync.create_state_tables'));

-- Rows that could not be expressed in the API contract: never sent, kept with the reason.
CREATE TABLE IF NOT EXISTS {schema}.quarantined_requests (
    dag_id          text        NOT NULL,
    interval_start  timestamptz NOT NULL,
    interval_end    timestamptz NOT NULL,
    row_fingerprint text        NOT NULL,
    reason          text        NOT NULL,
    row_data        jsonb       NOT NULL,
    first_run_id    text        NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, interval_start, row_fingerprint)
);

-- One row per batch and run: what was built, and when and how the receiver acknowledged it.
-- The batch's body waits in the outbox (below) until a delivery lane has sent it.
CREATE TABLE IF NOT EXISTS {schema}.delivery_ledger (
    dag_id           text        NOT NULL,
    run_id           text        NOT NULL,
    batch_index      integer     NOT NULL,
    interval_start   timestamptz,
    interval_end     timestamptz,
    idempotency_key  text,
    rows_extracted   integer     NOT NULL,
    rows_quarantined integer     NOT NULL,
    rows_sent        integer     NOT NULL,
    body_bytes       integer     NOT NULL,
    body_sha256      text,
    built_at         timestamptz NOT NULL DEFAULT now(),
    http_status      integer,
    accepted         integer,
    duplicate        boolean,
    attempts         integer,
    acked_at         timestamptz,
    PRIMARY KEY (dag_id, run_id, batch_index)
);
-- Columns added after the first release (ADD COLUMN IF NOT EXISTS keeps older tables working).
--   lane              the delivery lane that sends the batch (lane mod the lane count of the sending run)
--   status            pending (in the outbox) | acked | rejected (4xx: kept, not resent) |
--                     replaced (a later build of the same interval took its place) |
--                     empty (nothing to send: every row quarantined or superseded)
--   window_id         CDC mode: the capture window (services_sync.cdc_windows)
--   stored_bytes      size of the stored (gzip) body in the outbox
--   delivered_by_run  the run whose lane got the acknowledgment (a later run drains an
--                     earlier run's batches after an outage)
--   error             why a batch was rejected
ALTER TABLE {schema}.delivery_ledger
    ADD COLUMN IF NOT EXISTS rows_superseded  integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS parts            integer,
    ADD COLUMN IF NOT EXISTS lower_bound      text[],
    ADD COLUMN IF NOT EXISTS upper_bound      text[],
    ADD COLUMN IF NOT EXISTS read_snapshot    text,
    ADD COLUMN IF NOT EXISTS lane             integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS status           text,
    ADD COLUMN IF NOT EXISTS window_id        bigint,
    ADD COLUMN IF NOT EXISTS stored_bytes     integer,
    ADD COLUMN IF NOT EXISTS delivered_by_run text,
    ADD COLUMN IF NOT EXISTS error            text,
    ALTER COLUMN interval_start DROP NOT NULL,  -- a CDC run triggered by hand has no interval
    ALTER COLUMN interval_end DROP NOT NULL;
-- Rows from before the outbox had their body in XCom: history now, never sent again.
UPDATE {schema}.delivery_ledger
SET status = CASE WHEN acked_at IS NOT NULL THEN 'acked' ELSE 'replaced' END
WHERE status IS NULL;
CREATE INDEX IF NOT EXISTS delivery_ledger_interval_idx
    ON {schema}.delivery_ledger (dag_id, interval_start);
CREATE INDEX IF NOT EXISTS delivery_ledger_pending_idx
    ON {schema}.delivery_ledger (dag_id, interval_start, batch_index) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS delivery_ledger_window_idx
    ON {schema}.delivery_ledger (window_id) WHERE window_id IS NOT NULL;

-- The outbox: the exact body of each batch (gzip), written in the same transaction as its
-- ledger row and sent from here, so retries and later runs resend the stored bytes. Bodies of
-- acknowledged batches are deleted after SERVICES_SYNC_OUTBOX_RETENTION_H; ledger rows stay.
CREATE TABLE IF NOT EXISTS {schema}.outbox (
    dag_id      text    NOT NULL,
    run_id      text    NOT NULL,
    batch_index integer NOT NULL,
    body        bytea   NOT NULL,
    PRIMARY KEY (dag_id, run_id, batch_index),
    FOREIGN KEY (dag_id, run_id, batch_index)
        REFERENCES {schema}.delivery_ledger (dag_id, run_id, batch_index) ON DELETE CASCADE
);
-- Already compressed: store out of line without trying to compress again.
ALTER TABLE {schema}.outbox ALTER COLUMN body SET STORAGE EXTERNAL;

-- Query mode: the keyset batches of an interval, as first planned. Reruns and backfills of the
-- interval reuse them, so a row that moved out of the hour changes only the batch that held it
-- (every other batch keeps its body and Idempotency-Key).
CREATE TABLE IF NOT EXISTS {schema}.interval_plans (
    dag_id         text        NOT NULL,
    interval_start timestamptz NOT NULL,
    batch_index    integer     NOT NULL,
    interval_end   timestamptz NOT NULL,
    lower_bound    text[]      NOT NULL,
    upper_bound    text[]      NOT NULL,
    planned_rows   integer     NOT NULL,
    planned_by_run text        NOT NULL,
    planned_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, interval_start, batch_index)
);

-- One row per run: written when its batches are built, finished by record_delivery.
CREATE TABLE IF NOT EXISTS {schema}.delivery_runs (
    dag_id           text        NOT NULL,
    run_id           text        NOT NULL,
    interval_start   timestamptz,
    interval_end     timestamptz,
    rows_extracted   integer     NOT NULL,
    batches          integer     NOT NULL,
    batches_posted   integer     NOT NULL,
    rows_sent        integer     NOT NULL,
    rows_quarantined integer     NOT NULL,
    duplicates       integer     NOT NULL,
    built_at         timestamptz,
    finished_at      timestamptz,
    PRIMARY KEY (dag_id, run_id)
);
ALTER TABLE {schema}.delivery_runs
    ADD COLUMN IF NOT EXISTS built_at timestamptz,
    ALTER COLUMN interval_start DROP NOT NULL,
    ALTER COLUMN interval_end DROP NOT NULL,
    ALTER COLUMN finished_at DROP NOT NULL,   -- NULL: built, not (yet) all acknowledged
    ALTER COLUMN finished_at DROP DEFAULT;
