-- The receiver acknowledged a batch (all its parts, if a 413 split it): written by the lane
-- the moment the acknowledgment arrives, never from an earlier try's result.
-- Params (bind): dag_id, run_id, batch_index (the batch), http_status, accepted, duplicate,
-- parts, attempts, delivered_by_run (the sending run).
UPDATE {schema}.delivery_ledger
SET status           = 'acked',
    http_status      = %(http_status)s,
    accepted         = %(accepted)s,
    duplicate        = %(duplicate)s,
    parts            = %(parts)s,
    attempts         = %(attempts)s,
    acked_at         = now(),
    delivered_by_run = %(delivered_by_run)s,
    error            = NULL
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = %(batch_index)s
  AND status = 'pending';
