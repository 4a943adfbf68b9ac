-- The ledger rows of one run, in batch order.
-- Params (bind): dag_id, run_id.
SELECT batch_index, idempotency_key, rows_extracted, rows_quarantined, rows_sent,
       rows_superseded, body_bytes, http_status, accepted, duplicate, parts, attempts, acked_at,
       lower_bound, upper_bound, read_snapshot
FROM {schema}.delivery_ledger
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s
ORDER BY batch_index;
