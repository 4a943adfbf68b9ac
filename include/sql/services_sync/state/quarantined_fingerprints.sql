-- Which of these row versions are quarantined for the interval (by fingerprint): the
-- reconciliation reports them as quarantined, not as late commits.
-- Params (bind): dag_id, interval_start, fingerprints (text[]).
SELECT row_fingerprint
FROM {schema}.quarantined_requests
WHERE dag_id = %(dag_id)s
  AND interval_start = %(interval_start)s
  AND row_fingerprint = ANY(%(fingerprints)s::text[]);
