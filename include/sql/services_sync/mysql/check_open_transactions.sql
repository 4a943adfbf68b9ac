-- MySQL / MariaDB (InnoDB) dialect of ../check_open_transactions.sql, the late-commit gate: may
-- the interval [.., window_end) be read yet? Returns the same row (services_sync.gate).
-- Params (bind): window_end ('YYYY-MM-DD HH:MM:SS.ffffff', UTC), clock_skew_s (seconds),
--                unrelated_wait_s (seconds; echoed back).
--
-- NOW() is the start of the *statement* that stamps a row, and InnoDB starts a transaction no
-- later than its first read or write: a row stamped before window_end + clock_skew by a
-- transaction still open belongs to a transaction in information_schema.INNODB_TRX with
-- trx_started before that bound. The interval is ready only when, on the database clock (the
-- session runs in UTC), the bound has passed and no such transaction that has written
-- (trx_rows_modified > 0) is still open. Prepared XA transactions stay in INNODB_TRX (thread 0).
-- InnoDB does not say which table a transaction wrote (MariaDB has no
-- performance_schema.data_locks), so every write transaction from before the bound counts as a
-- writer of service_requests: waited for, and failing the run past
-- SERVICES_SYNC_MAX_OPEN_TRANSACTION_S. The unrelated_* columns are always empty.
-- INNODB_TRX is a cache InnoDB refreshes every 0.1 s: the bound counts as passed one second
-- late, so a transaction that started just before it is in the cache by then.
-- Needs the PROCESS privilege (INNODB_TRX, and PROCESSLIST for other users' sessions).
WITH bound AS (
    SELECT CAST(%(window_end)s AS DATETIME(6))
           + INTERVAL CAST(ROUND(%(clock_skew_s)s * 1000000) AS SIGNED) MICROSECOND AS until
),
writers AS (
    SELECT t.trx_mysql_thread_id AS pid,
           COALESCE(CONCAT(p.USER, '@', p.HOST, ', ', p.COMMAND), 'prepared XA transaction')
               AS who,
           TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) / 1000000 AS age_s
    FROM information_schema.INNODB_TRX AS t
    CROSS JOIN bound AS b
    LEFT JOIN information_schema.PROCESSLIST AS p ON p.ID = t.trx_mysql_thread_id
    WHERE t.trx_mysql_thread_id <> CONNECTION_ID()
      AND t.trx_rows_modified > 0
      AND t.trx_started < b.until
)
SELECT UTC_TIMESTAMP(6) >= b.until + INTERVAL 1 SECOND                    AS end_passed,
       1                                                                  AS can_see_all,
       (SELECT COUNT(*) FROM writers)                                     AS open_writers,
       0                                                                  AS open_prepared,
       (SELECT pid FROM writers ORDER BY age_s DESC LIMIT 1)              AS oldest_pid,
       (SELECT who FROM writers ORDER BY age_s DESC LIMIT 1)              AS oldest_who,
       (SELECT CAST(MAX(age_s) AS DOUBLE) FROM writers)                   AS oldest_age_s,
       NULL                                                               AS oldest_prepared_gid,
       TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), b.until + INTERVAL 1 SECOND) / 1000000
                                                                          AS seconds_to_end,
       CURRENT_USER()                                                     AS role_name,
       0                                                                  AS unrelated_writers,
       NULL                                                               AS unrelated_pid,
       NULL                                                               AS unrelated_who,
       NULL                                                               AS unrelated_age_s,
       CAST(%(unrelated_wait_s)s AS DOUBLE)                               AS unrelated_wait_s
FROM bound AS b
