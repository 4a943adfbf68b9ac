-- The rows now in a slice of an interval, to check at send time which records of a batch built
-- earlier still match their source row.
-- Params (bind): window_start, window_end (the slice, inside the interval: timestamptz).
SELECT sr.service_id, sr.request_id, sr.last_modified_date
FROM service_requests AS sr
WHERE sr.last_modified_date >= %(window_start)s::timestamptz
  AND sr.last_modified_date <  %(window_end)s::timestamptz;
