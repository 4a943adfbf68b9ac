-- Has this DAG built batches for an interval after the given one? Only then can a record of
-- the given interval have a newer version on its way (or already at the receiver).
-- Params (bind): dag_id, interval_start.
SELECT EXISTS (
    SELECT 1 FROM {schema}.delivery_ledger
    WHERE dag_id = %(dag_id)s AND interval_start > %(interval_start)s
);
