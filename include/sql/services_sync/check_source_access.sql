-- Cheap probe run by the first task: the table exists, the role may read it, and the columns
-- the pipeline needs are there. LIMIT 0 reads no row.
SELECT service_id, request_id, opening_date, status_id, last_modified_date
FROM service_requests
LIMIT 0;
