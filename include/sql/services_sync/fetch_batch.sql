-- Rows of one planned batch: sort keys in [lower, upper), inside the interval [window_start, window_end).
-- Params (bind): window_start, window_end (timestamptz); lower_lmd, lower_rid, lower_sid,
-- upper_lmd, upper_rid, upper_sid (the batch bounds from plan_batches.sql).
-- The window predicate keeps the index range scan; the row comparisons pick the batch.
SELECT sr.service_id, sr.request_id, sr.opening_date, sr.status_id, sr.last_modified_date
FROM service_requests AS sr
WHERE sr.last_modified_date >= %(window_start)s::timestamptz
  AND sr.last_modified_date <  %(window_end)s::timestamptz
  AND (sr.last_modified_date,
       coalesce(sr.request_id::text, '') COLLATE "C",
       coalesce(sr.service_id::text, '') COLLATE "C")
      >= (%(lower_lmd)s::timestamptz, %(lower_rid)s::text COLLATE "C", %(lower_sid)s::text COLLATE "C")
  AND (sr.last_modified_date,
       coalesce(sr.request_id::text, '') COLLATE "C",
       coalesce(sr.service_id::text, '') COLLATE "C")
      < (%(upper_lmd)s::timestamptz, %(upper_rid)s::text COLLATE "C", %(upper_sid)s::text COLLATE "C")
ORDER BY sr.last_modified_date,
         coalesce(sr.request_id::text, '') COLLATE "C",
         coalesce(sr.service_id::text, '') COLLATE "C";
