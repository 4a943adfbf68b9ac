-- The sync status view (read-only): per data interval of one DAG, newest first, what its latest
-- run extracted, delivered and quarantined, from the delivery ledger and the run summaries.
--
-- * Runs: every run on record, from its batches and from its summary (an hour without changes
--   has a summary and no batch). The run built or finished last speaks for its interval;
--   run_count says how many runs the interval had (reruns, backfills).
-- * recorded: the run has a summary written after its last batch was built, i.e. record_delivery
--   saw every batch acknowledged (a cleared run rebuilds its batches and is not recorded again
--   until it succeeds). A recorded run's planned batch count then leaves out ledger rows of
--   batches that a smaller, rebuilt plan no longer has.
-- * Window: intervals ending within window_hours of the newest interval on record; the caller
--   fills the hours that have no run at all.
-- * drained_batches: batches of the run acknowledged by another run's lanes (a later run drains
--   the outbox first, e.g. after an outage outlasted this run's retries); lanes: per delivery
--   lane, its batches and how many are acknowledged.
-- Params (bind): dag_id, window_hours.
WITH run_batches AS (
    SELECT run_id,
           min(interval_start) AS interval_start,
           min(interval_end)   AS interval_end,
           max(built_at)       AS last_built_at
    FROM {schema}.delivery_ledger
    WHERE dag_id = %(dag_id)s
    GROUP BY run_id
),
run_summaries AS (
    SELECT run_id, interval_start, interval_end, batches, finished_at
    FROM {schema}.delivery_runs
    WHERE dag_id = %(dag_id)s
),
runs AS (
    SELECT coalesce(b.run_id, s.run_id)                 AS run_id,
           coalesce(b.interval_start, s.interval_start) AS interval_start,
           coalesce(b.interval_end, s.interval_end)     AS interval_end,
           s.batches                                    AS planned_batches,
           s.finished_at,
           s.run_id IS NOT NULL
               AND (b.last_built_at IS NULL OR s.finished_at >= b.last_built_at) AS recorded,
           greatest(b.last_built_at, s.finished_at)     AS last_activity
    FROM run_batches AS b
    FULL JOIN run_summaries AS s ON s.run_id = b.run_id
),
horizon AS (
    SELECT max(interval_end) - make_interval(hours => %(window_hours)s::integer) AS after
    FROM runs
),
latest AS (
    SELECT DISTINCT ON (r.interval_start)
           r.*,
           count(*) OVER (PARTITION BY r.interval_start) AS run_count
    FROM runs AS r
    CROSS JOIN horizon AS h
    WHERE r.interval_end > h.after
    ORDER BY r.interval_start, r.last_activity DESC, r.run_id DESC
)
SELECT l.interval_start,
       l.interval_end,
       l.run_id,
       l.run_count,
       l.recorded,
       l.finished_at,
       count(d.batch_index)                                                   AS batches,
       count(d.acked_at)                                                      AS batches_acked,
       coalesce(array_agg(d.batch_index + 1 ORDER BY d.batch_index)
                    FILTER (WHERE d.rows_sent > 0 AND d.acked_at IS NULL), ARRAY[]::integer[]) AS unacked_batches,
       coalesce(array_agg(d.batch_index + 1 ORDER BY d.batch_index)
                    FILTER (WHERE d.acked_at IS NOT NULL
                              AND d.accepted IS DISTINCT FROM d.rows_sent), ARRAY[]::integer[]) AS miscounted_batches,
       count(*) FILTER (WHERE d.acked_at IS NOT NULL AND d.duplicate)         AS duplicate_batches,
       coalesce(sum(d.rows_extracted), 0)                                     AS rows_extracted,
       coalesce(sum(d.rows_sent) FILTER (WHERE d.acked_at IS NOT NULL), 0)    AS rows_delivered,
       coalesce(sum(d.rows_quarantined), 0)                                   AS rows_quarantined,
       coalesce(sum(d.rows_superseded), 0)                                    AS rows_superseded,
       max(d.acked_at)                                                        AS last_acked_at,
       max(d.attempts)                                                        AS max_attempts,
       count(*) FILTER (WHERE d.acked_at IS NOT NULL
                          AND d.delivered_by_run IS DISTINCT FROM l.run_id)   AS drained_batches,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('lane', p.lane, 'batches', p.batches,
                                                     'acked', p.acked) ORDER BY p.lane),
                        '[]'::jsonb)
        FROM (SELECT e.lane, count(*) AS batches, count(e.acked_at) AS acked
              FROM {schema}.delivery_ledger AS e
              WHERE e.dag_id = %(dag_id)s
                AND e.run_id = l.run_id
                AND NOT (l.recorded AND e.batch_index >= l.planned_batches)
              GROUP BY e.lane) AS p)                                           AS lanes
FROM latest AS l
LEFT JOIN {schema}.delivery_ledger AS d
       ON d.dag_id = %(dag_id)s
      AND d.run_id = l.run_id
      AND NOT (l.recorded AND d.batch_index >= l.planned_batches)
GROUP BY l.interval_start, l.interval_end, l.run_id, l.run_count, l.recorded, l.finished_at,
         l.planned_batches
ORDER BY l.interval_start DESC;
