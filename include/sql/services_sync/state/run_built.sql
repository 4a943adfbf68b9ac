-- Whether a run's batches were built (its summary row exists). Params (bind): dag_id, run_id.
SELECT built_at FROM {schema}.delivery_runs WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s;
