-- Record a built batch. A retry of the build overwrites it and clears any earlier ack, since
-- the body (and so the key) may differ.
-- Params (bind): dag_id, run_id, batch_index, interval_start, interval_end, idempotency_key,
-- rows_extracted, rows_quarantined, rows_sent, body_bytes, body_sha256.
INSERT INTO {schema}.delivery_ledger
    (dag_id, run_id, batch_index, interval_start, interval_end, idempotency_key,
     rows_extracted, rows_quarantined, rows_sent, body_bytes, body_sha256)
VALUES (%(dag_id)s, %(run_id)s, %(batch_index)s, %(interval_start)s, %(interval_end)s,
        %(idempotency_key)s, %(rows_extracted)s, %(rows_quarantined)s, %(rows_sent)s,
        %(body_bytes)s, %(body_sha256)s)
ON CONFLICT (dag_id, run_id, batch_index) DO UPDATE SET
    idempotency_key  = EXCLUDED.idempotency_key,
    rows_extracted   = EXCLUDED.rows_extracted,
    rows_quarantined = EXCLUDED.rows_quarantined,
    rows_sent        = EXCLUDED.rows_sent,
    body_bytes       = EXCLUDED.body_bytes,
    body_sha256      = EXCLUDED.body_sha256,
    built_at         = now(),
    http_status      = NULL,
    accepted         = NULL,
    duplicate        = NULL,
    attempts         = NULL,
    acked_at         = NULL;
