-- Reconciliation: rows now in the interval that the batch reading their key range could not see
-- (their current version was committed after its snapshot). Either a late commit that escaped
-- the late-commit gate (a writer's clock beyond the skew margin, a timestamp set by the
-- application), or a row updated in place after the read; the caller tells them apart against
-- the bodies it sent (services_sync.reconcile).
-- Params (bind): window_start, window_end (timestamptz); lower_lmd, lower_rid, lower_sid,
-- upper_lmd, upper_rid, upper_sid (text[]: the keyset bounds of the run's current batches),
-- snapshots (text[]: pg_snapshot each batch read in); limit (int, how many rows to return).
-- No batch at all (an interval read empty): every row now in the interval is returned.
-- Returns at most `limit` rows, in sort-key order: batch (1-based position in the arrays, NULL
-- without batches), the five columns as fetch_batch.sql reads them, and total (every such row).
-- Row xmin is a 32-bit xid: compared with age() against the snapshot's xmax (and its list of
-- in-progress xids), which stays right across xid wraparound and for frozen rows.
WITH batches AS (
    SELECT b.ord, b.lo_lmd::timestamptz AS lo_lmd, b.lo_rid, b.lo_sid,
           b.hi_lmd::timestamptz AS hi_lmd, b.hi_rid, b.hi_sid, b.snap::pg_snapshot AS snap
    FROM unnest(%(lower_lmd)s::text[], %(lower_rid)s::text[], %(lower_sid)s::text[],
                %(upper_lmd)s::text[], %(upper_rid)s::text[], %(upper_sid)s::text[],
                %(snapshots)s::text[])
         WITH ORDINALITY AS b(lo_lmd, lo_rid, lo_sid, hi_lmd, hi_rid, hi_sid, snap, ord)
),
late AS (
    SELECT b.ord AS batch, sr.service_id, sr.request_id, sr.opening_date, sr.status_id,
           sr.last_modified_date
    FROM batches AS b
    JOIN service_requests AS sr
      ON sr.last_modified_date >= %(window_start)s::timestamptz
     AND sr.last_modified_date <  %(window_end)s::timestamptz
     AND (sr.last_modified_date, coalesce(sr.request_id::text, '') COLLATE "C",
          coalesce(sr.service_id::text, '') COLLATE "C")
         >= (b.lo_lmd, b.lo_rid COLLATE "C", b.lo_sid COLLATE "C")
     AND (sr.last_modified_date, coalesce(sr.request_id::text, '') COLLATE "C",
          coalesce(sr.service_id::text, '') COLLATE "C")
         < (b.hi_lmd, b.hi_rid COLLATE "C", b.hi_sid COLLATE "C")
    WHERE age(sr.xmin) < age(mod(pg_snapshot_xmax(b.snap)::text::bigint, 4294967296)::text::xid)
       OR sr.xmin::text::bigint IN (
              SELECT mod(x::text::bigint, 4294967296) FROM pg_snapshot_xip(b.snap) AS x)
    UNION ALL
    SELECT NULL::bigint, sr.service_id, sr.request_id, sr.opening_date, sr.status_id,
           sr.last_modified_date
    FROM service_requests AS sr
    WHERE sr.last_modified_date >= %(window_start)s::timestamptz
      AND sr.last_modified_date <  %(window_end)s::timestamptz
      AND NOT EXISTS (SELECT 1 FROM batches)
)
SELECT l.batch, l.service_id, l.request_id, l.opening_date, l.status_id, l.last_modified_date,
       count(*) OVER () AS total
FROM late AS l
ORDER BY l.last_modified_date,
         coalesce(l.request_id::text, '') COLLATE "C",
         coalesce(l.service_id::text, '') COLLATE "C"
LIMIT %(limit)s::int;
