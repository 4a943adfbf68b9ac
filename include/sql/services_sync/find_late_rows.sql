-- Reconciliation: rows now in the interval that the batch reading their key range could not see
-- (committed after its snapshot). Such a row escaped the late-commit gate (a writer's clock
-- beyond the skew margin, a timestamp set by the application) and was never sent.
-- Params (bind): window_start, window_end (timestamptz); lower_lmd, lower_rid, lower_sid,
-- upper_lmd, upper_rid, upper_sid (text[]: the batches' keyset bounds), snapshots (text[]:
-- pg_snapshot each batch read in); limit (int, how many rows to name).
-- Row xmin is a 32-bit xid: compared with age() against the snapshot's xmax (and its list of
-- in-progress xids), which stays right across xid wraparound and for frozen rows.
WITH batches AS (
    SELECT b.lo_lmd::timestamptz AS lo_lmd, b.lo_rid, b.lo_sid,
           b.hi_lmd::timestamptz AS hi_lmd, b.hi_rid, b.hi_sid, b.snap::pg_snapshot AS snap
    FROM unnest(%(lower_lmd)s::text[], %(lower_rid)s::text[], %(lower_sid)s::text[],
                %(upper_lmd)s::text[], %(upper_rid)s::text[], %(upper_sid)s::text[],
                %(snapshots)s::text[])
         AS b(lo_lmd, lo_rid, lo_sid, hi_lmd, hi_rid, hi_sid, snap)
),
late AS (
    SELECT sr.service_id::text AS service_id, sr.request_id::text AS request_id,
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
)
SELECT (SELECT count(*) FROM late) AS late_rows,
       (SELECT coalesce(json_agg(l), '[]') FROM (
            SELECT * FROM late ORDER BY last_modified_date LIMIT %(limit)s::int) AS l) AS sample;
