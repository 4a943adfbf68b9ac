-- The receiver refused a batch for good (a 4xx, a wrong count): not resent by retries; a
-- rerun of its interval rebuilds it. Params (bind): dag_id, run_id, batch_index, http_status,
-- attempts, error.
UPDATE {schema}.delivery_ledger
SET status      = 'rejected',
    http_status = %(http_status)s,
    attempts    = %(attempts)s,
    error       = %(error)s
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = %(batch_index)s
  AND status = 'pending';
