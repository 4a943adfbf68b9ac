-- Record the receiver's acknowledgment of one batch of a run, matched by its key.
-- Params (bind): dag_id, run_id, idempotency_key, http_status, accepted, duplicate, attempts, acked_at.
UPDATE {schema}.delivery_ledger
SET http_status = %(http_status)s,
    accepted    = %(accepted)s,
    duplicate   = %(duplicate)s,
    attempts    = %(attempts)s,
    acked_at    = %(acked_at)s
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND idempotency_key = %(idempotency_key)s;
