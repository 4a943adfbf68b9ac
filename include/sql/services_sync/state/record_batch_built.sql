-- Record a built batch: pending (its body is in the outbox) or empty (nothing to send). A
-- rebuild by the same run (the run was cleared) overwrites the row and its earlier
-- acknowledgment: the batch is sent again (same body, same key, if its rows did not change).
-- Params (bind): dag_id, run_id, batch_index, interval_start, interval_end, window_id, lane,
-- status, idempotency_key, rows_extracted, rows_quarantined, rows_sent, body_bytes,
-- stored_bytes, body_sha256, lower_bound, upper_bound (the batch's keyset bounds or change
-- positions) and read_snapshot (the snapshot the rows were read in, for the reconciliation).
INSERT INTO {schema}.delivery_ledger
    (dag_id, run_id, batch_index, interval_start, interval_end, window_id, lane, status,
     idempotency_key, rows_extracted, rows_quarantined, rows_sent, body_bytes, stored_bytes,
     body_sha256, lower_bound, upper_bound, read_snapshot)
VALUES (%(dag_id)s, %(run_id)s, %(batch_index)s, %(interval_start)s, %(interval_end)s,
        %(window_id)s, %(lane)s, %(status)s, %(idempotency_key)s, %(rows_extracted)s,
        %(rows_quarantined)s, %(rows_sent)s, %(body_bytes)s, %(stored_bytes)s, %(body_sha256)s,
        %(lower_bound)s, %(upper_bound)s, %(read_snapshot)s)
ON CONFLICT (dag_id, run_id, batch_index) DO UPDATE SET
    interval_start   = EXCLUDED.interval_start,
    interval_end     = EXCLUDED.interval_end,
    window_id        = EXCLUDED.window_id,
    lane             = EXCLUDED.lane,
    status           = EXCLUDED.status,
    idempotency_key  = EXCLUDED.idempotency_key,
    rows_extracted   = EXCLUDED.rows_extracted,
    rows_quarantined = EXCLUDED.rows_quarantined,
    rows_sent        = EXCLUDED.rows_sent,
    body_bytes       = EXCLUDED.body_bytes,
    stored_bytes     = EXCLUDED.stored_bytes,
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
    acked_at         = NULL,
    delivered_by_run = NULL,
    error            = NULL;
