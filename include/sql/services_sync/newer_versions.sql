-- Keys whose source row now holds a newer version than the record a batch was built with.
-- Asked only for the records of a batch that its time slice no longer holds (current_versions.sql):
-- such a row either moved on (a newer version, sent with a later interval: drop the old one) or
-- is gone or was set back (no newer version: the record is still the latest word, send it).
-- Params (bind): service_ids, request_ids (text[], the records' ids as sent), stamps
-- (timestamptz[], their last_modified_date as sent: whole seconds), since (timestamptz, the
-- oldest of the stamps: lets the planner range-scan the last_modified_date index).
-- Sent stamps are truncated to the second, so a newer version is at least one second later.
SELECT DISTINCT k.sid, k.rid
FROM unnest(%(service_ids)s::text[], %(request_ids)s::text[], %(stamps)s::timestamptz[])
     AS k(sid, rid, lmd)
JOIN service_requests AS sr
  ON sr.service_id::text = k.sid
 AND sr.request_id::text = k.rid
 AND sr.last_modified_date >= k.lmd + interval '1 second'
WHERE sr.last_modified_date >= %(since)s::timestamptz;
