-- Keep one batch of an interval's first plan. Params (bind): dag_id, interval_start,
-- interval_end, batch_index, lower_bound, upper_bound (text[]: sort keys), planned_rows, run_id.
INSERT INTO {schema}.interval_plans
    (dag_id, interval_start, interval_end, batch_index, lower_bound, upper_bound, planned_rows,
     planned_by_run)
VALUES (%(dag_id)s, %(interval_start)s, %(interval_end)s, %(batch_index)s, %(lower_bound)s,
        %(upper_bound)s, %(planned_rows)s, %(run_id)s)
ON CONFLICT (dag_id, interval_start, batch_index) DO NOTHING;
