-- MySQL / MariaDB dialect of ../plan_batches.sql: the keyset batches of one data interval, one
-- small row per batch, never the data. Same columns, same tiling, same byte bound.
-- Params (bind): window_start, window_end ('YYYY-MM-DD HH:MM:SS.ffffff', UTC, half-open
-- [start, end)), batch_size (records per batch), max_batch_bytes (max JSON body size).
-- The session runs in UTC (time_zone '+00:00'): a TIMESTAMP column is compared in UTC, a
-- DATETIME column must hold UTC.
--
-- Sort key: (last_modified_date, request_id, service_id), NULL ids as '' and compared as bytes
-- (CAST ... AS BINARY: UTF-8 byte order is code point order, PostgreSQL's "C" collation), so the
-- order is total and identical here, in fetch_batch.sql and whatever the column collation.
-- Served by the index on last_modified_date (a range scan). Bounds leave as text (CAST AS CHAR
-- keeps microseconds).
WITH sort_keys AS (
    SELECT sr.last_modified_date AS lmd,
           CAST(COALESCE(sr.request_id, '') AS BINARY) AS rid,
           CAST(COALESCE(sr.service_id, '') AS BINARY) AS sid
    FROM service_requests AS sr
    WHERE sr.last_modified_date >= CAST(%(window_start)s AS DATETIME(6))
      AND sr.last_modified_date <  CAST(%(window_end)s AS DATETIME(6))
),
fits AS (
    SELECT GREATEST(1, (CAST(%(max_batch_bytes)s AS SIGNED) - 16) DIV MAX(
               150
               + CHAR_LENGTH(JSON_QUOTE(CONVERT(rid USING utf8mb4)))
               + 5 * (LENGTH(rid) - CHAR_LENGTH(CONVERT(rid USING utf8mb4)))
               + CHAR_LENGTH(JSON_QUOTE(CONVERT(sid USING utf8mb4)))
               + 5 * (LENGTH(sid) - CHAR_LENGTH(CONVERT(sid USING utf8mb4)))
           )) AS by_bytes
    FROM sort_keys
),
sizing AS (
    SELECT LEAST(by_bytes, CAST(%(batch_size)s AS SIGNED)) AS rows_per_batch FROM fits
),
numbered AS (
    SELECT lmd, rid, sid,
           ROW_NUMBER() OVER (ORDER BY lmd, rid, sid) - 1 AS rn,
           COUNT(*) OVER () AS total
    FROM sort_keys
),
starts AS (
    SELECT n.rn DIV s.rows_per_batch AS batch_index, n.lmd, n.rid, n.sid, n.total,
           s.rows_per_batch
    FROM numbered AS n CROSS JOIN sizing AS s
    WHERE MOD(n.rn, s.rows_per_batch) = 0
)
SELECT batch_index,
       COUNT(*) OVER () AS batch_count,
       CASE WHEN batch_index = 0 THEN CAST(%(window_start)s AS CHAR)
            ELSE CAST(lmd AS CHAR) END AS lower_lmd,
       CASE WHEN batch_index = 0 THEN '' ELSE CONVERT(rid USING utf8mb4) END AS lower_rid,
       CASE WHEN batch_index = 0 THEN '' ELSE CONVERT(sid USING utf8mb4) END AS lower_sid,
       COALESCE(CAST(LEAD(lmd) OVER w AS CHAR), CAST(%(window_end)s AS CHAR)) AS upper_lmd,
       COALESCE(CONVERT(LEAD(rid) OVER w USING utf8mb4), '') AS upper_rid,
       COALESCE(CONVERT(LEAD(sid) OVER w USING utf8mb4), '') AS upper_sid,
       LEAST(total - batch_index * rows_per_batch, rows_per_batch) AS planned_rows,
       total AS interval_rows
FROM starts
WINDOW w AS (ORDER BY batch_index)
ORDER BY batch_index
