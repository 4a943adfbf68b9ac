-- A batch lost records at send time because newer versions were delivered by a later interval:
-- record its new body and key before it is posted.
-- Params (bind): dag_id, run_id, batch_index, idempotency_key, rows_sent, rows_superseded,
-- body_bytes, body_sha256.
UPDATE {schema}.delivery_ledger
SET idempotency_key = %(idempotency_key)s,
    rows_sent       = %(rows_sent)s,
    rows_superseded = %(rows_superseded)s,
    body_bytes      = %(body_bytes)s,
    body_sha256     = %(body_sha256)s
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = %(batch_index)s;
