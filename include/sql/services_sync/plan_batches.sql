-- Plan the keyset batches of one data interval; returns one small row per batch, never the data
-- (the plan_batches task keeps it in the state database: an interval's reruns reuse its first
-- plan).
-- Params (bind): window_start, window_end (timestamptz, half-open [start, end)),
-- batch_size (int, records per batch), max_batch_bytes (int, max JSON body size).
--
-- Sort key: (last_modified_date, request_id, service_id), NULL ids as '' and compared with the
-- "C" collation so the order is total and identical in this plan and in fetch_batch.sql.
-- The first batch starts at the window start and the last ends at the window end, so the
-- batches tile the whole interval: a row that changes between planning and fetching is still
-- fetched by exactly one batch. Served by the index on last_modified_date (a range scan).
--
-- Bytes: a record's JSON is at most 150 bytes plus its two ids, escaped as the body escapes them
-- (ASCII-only JSON: a non-ASCII character takes up to 5 more bytes than one). The interval's
-- largest record sets how many records fit in max_batch_bytes. Records per batch: batch_size,
-- and never more than fit the byte bound (so no body of the first plan exceeds it).
-- Timestamps leave as text (the stored bounds; microseconds kept).
WITH keys AS (
    SELECT sr.last_modified_date AS lmd,
           coalesce(sr.request_id::text, '') COLLATE "C" AS rid,
           coalesce(sr.service_id::text, '') COLLATE "C" AS sid
    FROM service_requests AS sr
    WHERE sr.last_modified_date >= %(window_start)s::timestamptz
      AND sr.last_modified_date <  %(window_end)s::timestamptz
),
fits AS (
    SELECT greatest(1, (%(max_batch_bytes)s::int - 16) / max(
               150
               + length(to_json(rid::text)::text) + 5 * (octet_length(rid) - length(rid))
               + length(to_json(sid::text)::text) + 5 * (octet_length(sid) - length(sid))
           )) AS by_bytes,
           count(*) AS total
    FROM keys
),
sizing AS (
    SELECT least(by_bytes, %(batch_size)s::int) AS rows_per_batch
    FROM fits
),
numbered AS (
    SELECT lmd, rid, sid,
           row_number() OVER (ORDER BY lmd, rid, sid) - 1 AS rn,
           count(*) OVER () AS total
    FROM keys
),
starts AS (
    SELECT n.rn / s.rows_per_batch AS batch_index, n.lmd, n.rid, n.sid, n.total, s.rows_per_batch
    FROM numbered AS n CROSS JOIN sizing AS s
    WHERE mod(n.rn, s.rows_per_batch) = 0
)
SELECT batch_index,
       count(*) OVER () AS batch_count,
       CASE WHEN batch_index = 0 THEN %(window_start)s::timestamptz ELSE lmd END::text AS lower_lmd,
       CASE WHEN batch_index = 0 THEN '' ELSE rid END AS lower_rid,
       CASE WHEN batch_index = 0 THEN '' ELSE sid END AS lower_sid,
       coalesce(lead(lmd) OVER w, %(window_end)s::timestamptz)::text AS upper_lmd,
       coalesce(lead(rid) OVER w, '') AS upper_rid,
       coalesce(lead(sid) OVER w, '') AS upper_sid,
       least(total - batch_index * rows_per_batch, rows_per_batch) AS planned_rows,
       total AS interval_rows
FROM starts
WINDOW w AS (ORDER BY batch_index)
ORDER BY batch_index;
