-- Retention: delete the bodies of batches that need no sending any more (acknowledged,
-- replaced by a later build, or empty) once they are older than the retention, a bounded
-- number per call so no run pays for a large backlog at once. Ledger rows stay.
-- Params (bind): dag_id, retention_h (float, hours), limit (int).
DELETE FROM {schema}.outbox AS o
USING (
    SELECT l.dag_id, l.run_id, l.batch_index
    FROM {schema}.delivery_ledger AS l
    JOIN {schema}.outbox AS b USING (dag_id, run_id, batch_index)
    WHERE l.dag_id = %(dag_id)s
      AND l.status IN ('acked', 'replaced', 'empty')
      AND coalesce(l.acked_at, l.built_at)
          < now() - make_interval(secs => %(retention_h)s::float * 3600)
    LIMIT %(limit)s::int
) AS old
WHERE o.dag_id = old.dag_id AND o.run_id = old.run_id AND o.batch_index = old.batch_index;
