-- MySQL / MariaDB dialect of ../fetch_batch.sql: rows of one planned batch, sort keys in
-- [lower, upper), inside the interval [window_start, window_end).
-- Params (bind): window_start, window_end, lower_lmd, upper_lmd ('YYYY-MM-DD HH:MM:SS.ffffff',
-- UTC); lower_rid, lower_sid, upper_rid, upper_sid (the batch bounds from plan_batches.sql).
-- The window predicate keeps the index range scan; the row comparisons pick the batch.
SELECT sr.service_id, sr.request_id, sr.opening_date, sr.status_id, sr.last_modified_date
FROM service_requests AS sr
WHERE sr.last_modified_date >= CAST(%(window_start)s AS DATETIME(6))
  AND sr.last_modified_date <  CAST(%(window_end)s AS DATETIME(6))
  AND (sr.last_modified_date,
       CAST(COALESCE(sr.request_id, '') AS BINARY),
       CAST(COALESCE(sr.service_id, '') AS BINARY))
      >= (CAST(%(lower_lmd)s AS DATETIME(6)), CAST(%(lower_rid)s AS BINARY),
          CAST(%(lower_sid)s AS BINARY))
  AND (sr.last_modified_date,
       CAST(COALESCE(sr.request_id, '') AS BINARY),
       CAST(COALESCE(sr.service_id, '') AS BINARY))
      < (CAST(%(upper_lmd)s AS DATETIME(6)), CAST(%(upper_rid)s AS BINARY),
         CAST(%(upper_sid)s AS BINARY))
ORDER BY sr.last_modified_date,
         CAST(COALESCE(sr.request_id, '') AS BINARY),
         CAST(COALESCE(sr.service_id, '') AS BINARY)
