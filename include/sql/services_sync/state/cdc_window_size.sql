-- What a captured window delivers: the record count and the largest staged row (bytes), which
-- bounds the rows per batch under max_batch_bytes.
SELECT count(*) AS records,
       coalesce(max(octet_length(row_data::text)), 0) AS max_row_bytes
FROM {schema}.cdc_changes
WHERE window_id = %(window_id)s AND ord IS NOT NULL;
