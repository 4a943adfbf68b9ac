-- The next batch a delivery lane sends: the oldest pending batch of the DAG in this lane
-- (lane mod lanes), oldest interval first, in batch order; batches of intervals after the
-- sending run's own are left to their own runs. Earlier runs' batches come first: that is how
-- an hour that failed past its retry budget drains by itself once the receiver is back.
-- Params (bind): dag_id, lane, lanes, up_to (the sending run's interval start; NULL: any).
SELECT l.run_id, l.batch_index, l.interval_start, l.interval_end, l.window_id,
       l.idempotency_key, o.body
FROM {schema}.delivery_ledger AS l
JOIN {schema}.outbox AS o USING (dag_id, run_id, batch_index)
WHERE l.dag_id = %(dag_id)s
  AND l.status = 'pending'
  AND mod(l.lane, %(lanes)s) = %(lane)s
  AND (%(up_to)s::timestamptz IS NULL
       OR l.interval_start IS NULL
       OR l.interval_start <= %(up_to)s::timestamptz)
ORDER BY l.interval_start NULLS FIRST, l.batch_index
LIMIT 1;
