-- Record the receiver's acknowledgment of one batch of a run (all its parts, if a 413 split it).
-- Params (bind): dag_id, run_id, batch_index, http_status, accepted, duplicate, parts, attempts,
-- acked_at.
UPDATE {schema}.delivery_ledger
SET http_status = %(http_status)s,
    accepted    = %(accepted)s,
    duplicate   = %(duplicate)s,
    parts       = %(parts)s,
    attempts    = %(attempts)s,
    acked_at    = %(acked_at)s
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = %(batch_index)s;
