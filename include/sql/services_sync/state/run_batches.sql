-- The ledger rows of one run, in batch order.
-- Params (bind): dag_id, run_id.
SELECT batch_index, idempotency_key, rows_extracted, rows_quarantined, rows_sent, body_bytes,
       http_status, accepted, duplicate, attempts, acked_at
FROM {schema}.delivery_ledger
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s
ORDER BY batch_index;
