-- Serialize the planning of one interval (two runs of the same hour may plan at once), until
-- the end of the transaction. Params (bind): dag_id, interval_start.
SELECT pg_advisory_xact_lock(hashtext('services_sync.interval_plans'),
                             hashtext(%(dag_id)s || '/' || %(interval_start)s::timestamptz::text));
