-- Initial load: the whole table, read in the same REPEATABLE READ transaction that took the
-- snapshot (pg_current_snapshot()) the stream is filtered with: a streamed transaction is
-- skipped exactly when its effects are in these rows, so nothing is missed or counted twice.
SELECT service_id, request_id, opening_date, status_id, last_modified_date
FROM service_requests;
