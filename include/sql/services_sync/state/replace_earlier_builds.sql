-- A new build of an interval takes the place of the batches earlier runs built for it and
-- never got acknowledged: they are not sent any more, this run sends the interval as it is now.
-- Params (bind): dag_id, run_id, interval_start.
UPDATE {schema}.delivery_ledger
SET status = 'replaced'
WHERE dag_id = %(dag_id)s
  AND interval_start = %(interval_start)s
  AND run_id <> %(run_id)s
  AND status IN ('pending', 'rejected');
