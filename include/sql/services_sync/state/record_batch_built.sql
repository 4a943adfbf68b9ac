-- Record a built batch. A retry of the build overwrites it and clears any earlier ack, since
-- the body (and so the key) may differ.
-- Params (bind): dag_id, run_id, batch_index, interval_start, interval_end, idempotency_key,
-- rows_extracted, rows_quarantined, rows_sent, body_bytes, body_sha256, lower_bound, upper_bound
-- (the batch's keyset bounds) and read_snapshot (the snapshot the rows were read in, for the
-- reconciliation's late-commit check).
INSERT INTO {schema}.delivery_ledger
    (dag_id, run_id, batch_index, interval_start, interval_end, idempotency_key,
     rows_extracted, rows_quarantined, rows_sent, body_bytes, body_sha256,
     lower_bound, upper_bound, read_snapshot)
VALUES (%(dag_id)s, %(run_id)s, %(batch_index)s, %(interval_start)s, %(interval_end)s,
        %(idempotency_key)s, %(rows_extracted)s, %(rows_quarantined)s, %(rows_sent)s,
        %(body_bytes)s, %(body_sha256)s, %(lower_bound)s, %(upper_bound)s, %(read_snapshot)s)
ON CONFLICT (dag_id, run_id, batch_index) DO UPDATE SET
    idempotency_key  = EXCLUDED.idempotency_key,
    rows_extracted   = EXCLUDED.rows_extracted,
    rows_quarantined = EXCLUDED.rows_quarantined,
    rows_sent        = EXCLUDED.rows_sent,
    body_bytes       = EXCLUDED.body_bytes,
    body_sha256      = EXCLUDED.body_sha256,
    lower_bound      = EXCLUDED.lower_bound,
    upper_bound      = EXCLUDED.upper_bound,
    read_snapshot    = EXCLUDED.read_snapshot,
    rows_superseded  = 0,
    parts            = NULL,
    built_at         = now(),
    http_status      = NULL,
    accepted         = NULL,
    duplicate        = NULL,
    attempts         = NULL,
    acked_at         = NULL;
