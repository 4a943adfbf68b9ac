-- MySQL / MariaDB dialect of ../current_versions.sql: the rows now in a slice of an interval.
-- Params (bind): window_start, window_end ('YYYY-MM-DD HH:MM:SS.ffffff', UTC).
SELECT sr.service_id, sr.request_id, sr.last_modified_date
FROM service_requests AS sr
WHERE sr.last_modified_date >= CAST(%(window_start)s AS DATETIME(6))
  AND sr.last_modified_date <  CAST(%(window_end)s AS DATETIME(6))
