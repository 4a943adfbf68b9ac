-- Has this DAG already delivered an interval after the given one? Only then can a record of the
-- given interval have been superseded at the receiver by a newer version.
-- Params (bind): dag_id, interval_start.
SELECT EXISTS (
    SELECT 1 FROM {schema}.delivery_runs
    WHERE dag_id = %(dag_id)s AND interval_start > %(interval_start)s
);
