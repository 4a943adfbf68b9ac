-- Development/demo source table (the production table is the user's own).
-- status_id is text on purpose: legacy rows may hold non-integer statuses, which the pipeline
-- must quarantine rather than send. The index on last_modified_date serves the hourly range scan.
CREATE TABLE IF NOT EXISTS service_requests (
    service_id         text,
    request_id         text,
    opening_date       timestamptz,
    status_id          text,
    last_modified_date timestamptz
);
CREATE INDEX IF NOT EXISTS service_requests_last_modified_idx
    ON service_requests (last_modified_date);
