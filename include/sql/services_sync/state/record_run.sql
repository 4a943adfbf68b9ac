-- A run's batches were all acknowledged: finish its summary row.
-- Params (bind): dag_id, run_id, interval_start, interval_end, rows_extracted, batches,
-- batches_posted, rows_sent, rows_quarantined, duplicates.
INSERT INTO {schema}.delivery_runs
    (dag_id, run_id, interval_start, interval_end, rows_extracted, batches, batches_posted,
     rows_sent, rows_quarantined, duplicates, built_at, finished_at)
VALUES (%(dag_id)s, %(run_id)s, %(interval_start)s, %(interval_end)s, %(rows_extracted)s,
        %(batches)s, %(batches_posted)s, %(rows_sent)s, %(rows_quarantined)s, %(duplicates)s,
        now(), now())
ON CONFLICT (dag_id, run_id) DO UPDATE SET
    interval_start   = EXCLUDED.interval_start,
    interval_end     = EXCLUDED.interval_end,
    rows_extracted   = EXCLUDED.rows_extracted,
    batches          = EXCLUDED.batches,
    batches_posted   = EXCLUDED.batches_posted,
    rows_sent        = EXCLUDED.rows_sent,
    rows_quarantined = EXCLUDED.rows_quarantined,
    duplicates       = EXCLUDED.duplicates,
    finished_at      = now();
