-- The ledger rows of one run, in batch order.
-- Params (bind): dag_id, run_id.
SELECT batch_index, lane, status, idempotency_key, rows_extracted, rows_quarantined, rows_sent,
       rows_superseded, body_bytes, stored_bytes, http_status, accepted, duplicate, parts,
       attempts, acked_at, delivered_by_run, error, lower_bound, upper_bound, read_snapshot,
       window_id
FROM {schema}.delivery_ledger
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s
ORDER BY batch_index;
