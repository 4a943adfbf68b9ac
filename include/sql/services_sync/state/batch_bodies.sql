-- The stored (gzip) bodies of some batches of one run, for the reconciliation to compare rows
-- the read could not see with what was sent. A body deleted by the retention has no row.
-- Params (bind): dag_id, run_id, batch_indexes (int[]).
SELECT batch_index, body
FROM {schema}.outbox
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = ANY(%(batch_indexes)s::int[])
ORDER BY batch_index;
