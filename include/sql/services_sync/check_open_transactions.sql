-- Late-commit gate: may the interval [.., window_end) be read yet?
-- Params (bind): window_end (timestamptz), clock_skew_s (float, seconds),
--                unrelated_wait_s (float, seconds; echoed back for services_sync.gate).
--
-- now() is the transaction *start* time: a row stamped 10:59:59 by a transaction that commits
-- at 11:00:30 is invisible to a read at 11:00:05 and belongs to no later interval. So the
-- interval is ready only when, on the database's own clock,
--   * window_end + clock_skew has passed (writers whose clocks run behind are done), and
--   * no transaction that started before window_end + clock_skew and has written
--     service_requests is still open. "Has written" = holds a transaction id and a lock on
--     service_requests or any partition / inheritance child of it (a lock on a table is held
--     until the transaction ends). Prepared two-phase transactions keep their locks: they are
--     matched to theirs in pg_locks through their transactionid lock's virtualtransaction.
-- Other write transactions from before the bound (a nightly ETL in another schema) matter only
-- if they write service_requests later, with their old start time: they are returned apart
-- (unrelated_*), and services_sync.gate waits for them at most unrelated_wait_s after the
-- bound; reconcile_interval catches the rare late row. A prepared transaction that holds no lock
-- on the table can write nothing more, so it is never waited for.
-- Seeing other roles' transactions needs pg_read_all_stats (or pg_monitor): can_see_all says
-- whether this role has it. One row; the oldest transaction of each kind is named for the log.
WITH RECURSIVE source_tables (relid) AS (
    SELECT 'service_requests'::regclass::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits AS i JOIN source_tables AS s ON i.inhparent = s.relid
),
table_locks AS (
    SELECT l.pid, l.virtualtransaction
    FROM pg_locks AS l
    WHERE l.locktype = 'relation'
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation IN (SELECT relid FROM source_tables)
),
bound AS (
    SELECT %(window_end)s::timestamptz + make_interval(secs => %(clock_skew_s)s::float) AS until
),
old_writers AS (
    SELECT a.pid, a.usename, a.application_name, a.state, now() - a.xact_start AS age,
           EXISTS (SELECT FROM table_locks AS t WHERE t.pid = a.pid) AS writes_table
    FROM pg_stat_activity AS a, bound
    WHERE a.datname = current_database()
      AND a.pid <> pg_backend_pid()
      AND a.backend_xid IS NOT NULL
      AND a.xact_start < bound.until
),
writers AS (SELECT * FROM old_writers WHERE writes_table),
unrelated AS (SELECT * FROM old_writers WHERE NOT writes_table),
prepared AS (
    SELECT p.gid, now() - p.prepared AS age
    FROM pg_prepared_xacts AS p, bound
    WHERE p.database = current_database()
      AND p.prepared < bound.until
      AND EXISTS (
          SELECT
          FROM pg_locks AS x
          JOIN table_locks AS t ON t.virtualtransaction = x.virtualtransaction
          WHERE x.locktype = 'transactionid' AND x.transactionid = p.transaction
            AND x.pid IS NULL AND t.pid IS NULL
      )
)
SELECT now() >= bound.until                                   AS end_passed,
       pg_has_role('pg_read_all_stats', 'MEMBER')             AS can_see_all,
       (SELECT count(*) FROM writers)                          AS open_writers,
       (SELECT count(*) FROM prepared)                         AS open_prepared,
       (SELECT pid FROM writers ORDER BY age DESC LIMIT 1)     AS oldest_pid,
       (SELECT usename || coalesce(' (' || nullif(application_name, '') || ')', '') || ', ' || state
          FROM writers ORDER BY age DESC LIMIT 1)              AS oldest_who,
       extract(epoch FROM greatest(
           (SELECT max(age) FROM writers), (SELECT max(age) FROM prepared)))::float
                                                               AS oldest_age_s,
       (SELECT gid FROM prepared ORDER BY age DESC LIMIT 1)    AS oldest_prepared_gid,
       extract(epoch FROM bound.until - now())::float          AS seconds_to_end,
       current_user::text                                      AS role_name,
       (SELECT count(*) FROM unrelated)                        AS unrelated_writers,
       (SELECT pid FROM unrelated ORDER BY age DESC LIMIT 1)   AS unrelated_pid,
       (SELECT usename || coalesce(' (' || nullif(application_name, '') || ')', '') || ', ' || state
          FROM unrelated ORDER BY age DESC LIMIT 1)            AS unrelated_who,
       extract(epoch FROM (SELECT max(age) FROM unrelated))::float
                                                               AS unrelated_age_s,
       %(unrelated_wait_s)s::float                             AS unrelated_wait_s
FROM bound;
