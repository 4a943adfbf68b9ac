-- A batch lost records at send time because newer versions are on their way with a later
-- interval: record its new body and key before it is posted (empty: nothing left to send).
-- Params (bind): dag_id, run_id, batch_index, idempotency_key, rows_sent, rows_superseded,
-- body_bytes, body_sha256, status.
UPDATE {schema}.delivery_ledger
SET idempotency_key = %(idempotency_key)s,
    rows_sent       = %(rows_sent)s,
    rows_superseded = %(rows_superseded)s,
    body_bytes      = %(body_bytes)s,
    body_sha256     = %(body_sha256)s,
    status          = %(status)s
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = %(batch_index)s;
