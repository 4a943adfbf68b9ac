-- Types of the columns the pipeline reads, and whether an index starts with last_modified_date
-- (the hourly query is a range scan on it). The time-zone rule depends on the type: TIMESTAMP is
-- read in the session zone (UTC), DATETIME must hold UTC.
SELECT c.COLUMN_NAME, c.DATA_TYPE,
       EXISTS (SELECT 1 FROM information_schema.STATISTICS AS s
               WHERE s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME
                 AND s.COLUMN_NAME = 'last_modified_date' AND s.SEQ_IN_INDEX = 1) AS indexed
FROM information_schema.COLUMNS AS c
WHERE c.TABLE_SCHEMA = DATABASE()
  AND c.TABLE_NAME = 'service_requests'
  AND c.COLUMN_NAME IN ('service_id', 'request_id', 'opening_date', 'status_id',
                        'last_modified_date')
ORDER BY c.ORDINAL_POSITION
