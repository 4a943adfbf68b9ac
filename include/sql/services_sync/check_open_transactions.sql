-- Late-commit gate: may the interval [.., window_end) be read yet?
-- Params (bind): window_end (timestamptz), clock_skew_s (float, seconds).
--
-- now() is the transaction *start* time: a row stamped 10:59:59 by a transaction that commits
-- at 11:00:30 is invisible to a read at 11:00:05 and belongs to no later interval. So the
-- interval is ready only when, on the database's own clock,
--   * window_end + clock_skew has passed (writers whose clocks run behind are done), and
--   * no write transaction (one holding a transaction id) that started before
--     window_end + clock_skew is still open, prepared two-phase transactions included.
-- Seeing other roles' transactions needs pg_read_all_stats (or pg_monitor): can_see_all says
-- whether this role has it. One row; the oldest blocking transaction is named for the alert.
WITH bound AS (
    SELECT %(window_end)s::timestamptz + make_interval(secs => %(clock_skew_s)s::float) AS until
),
writers AS (
    SELECT a.pid, a.usename, a.application_name, a.state, now() - a.xact_start AS age
    FROM pg_stat_activity AS a, bound
    WHERE a.datname = current_database()
      AND a.pid <> pg_backend_pid()
      AND a.backend_xid IS NOT NULL
      AND a.xact_start < bound.until
),
prepared AS (
    SELECT p.gid, now() - p.prepared AS age
    FROM pg_prepared_xacts AS p, bound
    WHERE p.database = current_database()
      AND p.prepared < bound.until
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
       current_user::text                                      AS role_name
FROM bound;
