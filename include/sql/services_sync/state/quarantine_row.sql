-- Keep a row that failed the contract; the same row version quarantined again is one entry.
-- Params (bind): dag_id, interval_start, interval_end, row_fingerprint, reason, row_data (json), run_id.
INSERT INTO {schema}.quarantined_requests
    (dag_id, interval_start, interval_end, row_fingerprint, reason, row_data, first_run_id)
VALUES (%(dag_id)s, %(interval_start)s, %(interval_end)s, %(row_fingerprint)s, %(reason)s,
        %(row_data)s::jsonb, %(run_id)s)
ON CONFLICT (dag_id, interval_start, row_fingerprint) DO NOTHING;
