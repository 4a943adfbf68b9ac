-- A run built its batches: its summary row, not finished yet (record_delivery finishes it).
-- Params (bind): dag_id, run_id, interval_start, interval_end, rows_extracted, batches,
-- rows_quarantined.
INSERT INTO {schema}.delivery_runs
    (dag_id, run_id, interval_start, interval_end, rows_extracted, batches, batches_posted,
     rows_sent, rows_quarantined, duplicates, built_at, finished_at)
VALUES (%(dag_id)s, %(run_id)s, %(interval_start)s, %(interval_end)s, %(rows_extracted)s,
        %(batches)s, 0, 0, %(rows_quarantined)s, 0, now(), NULL)
ON CONFLICT (dag_id, run_id) DO UPDATE SET
    interval_start   = EXCLUDED.interval_start,
    interval_end     = EXCLUDED.interval_end,
    rows_extracted   = EXCLUDED.rows_extracted,
    batches          = EXCLUDED.batches,
    batches_posted   = 0,
    rows_sent        = 0,
    rows_quarantined = EXCLUDED.rows_quarantined,
    duplicates       = 0,
    built_at         = now(),
    finished_at      = NULL;
