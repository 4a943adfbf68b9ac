-- The stored plan of an interval, in batch order (no row: never planned, or no changes then).
-- Params (bind): dag_id, interval_start.
SELECT batch_index, lower_bound, upper_bound, planned_rows, planned_by_run
FROM {schema}.interval_plans
WHERE dag_id = %(dag_id)s AND interval_start = %(interval_start)s
ORDER BY batch_index;
