-- CDC mode: the ledger rows of a capture window (built by whichever run captured it), in
-- batch order. Params (bind): window_id.
SELECT run_id, batch_index, lane, status, idempotency_key, rows_extracted, rows_quarantined,
       rows_sent, rows_superseded, body_bytes, stored_bytes, http_status, accepted, duplicate,
       parts, attempts, acked_at, delivered_by_run, error
FROM {schema}.delivery_ledger
WHERE window_id = %(window_id)s
ORDER BY batch_index;
