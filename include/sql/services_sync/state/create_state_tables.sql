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
CREATE TABLE IF NOT EXISTS {schema}.delivery_ledger (
    dag_id           text        NOT NULL,
    run_id           text        NOT NULL,
    batch_index      integer     NOT NULL,
    interval_start   timestamptz NOT NULL,
    interval_end     timestamptz NOT NULL,
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
ALTER TABLE {schema}.delivery_ledger
    ADD COLUMN IF NOT EXISTS rows_superseded integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS parts           integer,
    ADD COLUMN IF NOT EXISTS lower_bound     text[],
    ADD COLUMN IF NOT EXISTS upper_bound     text[],
    ADD COLUMN IF NOT EXISTS read_snapshot   text;
CREATE INDEX IF NOT EXISTS delivery_ledger_interval_idx
    ON {schema}.delivery_ledger (dag_id, interval_start);

-- One row per run: the summary the final task logs.
CREATE TABLE IF NOT EXISTS {schema}.delivery_runs (
    dag_id           text        NOT NULL,
    run_id           text        NOT NULL,
    interval_start   timestamptz NOT NULL,
    interval_end     timestamptz NOT NULL,
    rows_extracted   integer     NOT NULL,
    batches          integer     NOT NULL,
    batches_posted   integer     NOT NULL,
    rows_sent        integer     NOT NULL,
    rows_quarantined integer     NOT NULL,
    duplicates       integer     NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, run_id)
);

