-- MySQL / MariaDB dialect of ../newer_versions.sql: keys whose source row now holds a newer
-- version than the record a batch was built with.
-- Params (bind): records (a JSON array of [service_id, request_id, last_modified_date] as sent:
-- whole UTC seconds 'YYYY-MM-DD HH:MM:SS'), since (the oldest of the stamps: lets the planner
-- range-scan the last_modified_date index). Ids are compared as bytes, whatever the collation.
SELECT DISTINCT k.sid, k.rid
FROM JSON_TABLE(
         %(records)s, '$[*]'
         COLUMNS (sid VARCHAR(1024) PATH '$[0]',
                  rid VARCHAR(1024) PATH '$[1]',
                  lmd VARCHAR(32) PATH '$[2]')
     ) AS k
JOIN service_requests AS sr
  ON CAST(sr.service_id AS BINARY) = CAST(k.sid AS BINARY)
 AND CAST(sr.request_id AS BINARY) = CAST(k.rid AS BINARY)
 AND sr.last_modified_date >= CAST(k.lmd AS DATETIME(6)) + INTERVAL 1 SECOND
WHERE sr.last_modified_date >= CAST(%(since)s AS DATETIME(6))
