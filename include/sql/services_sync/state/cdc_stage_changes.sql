-- COPY target of the staged changes (values streamed by the client, never formatted into SQL).
COPY {schema}.cdc_changes
    (window_id, commit_lsn, position, op, commit_time, service_id, request_id, row_data)
FROM STDIN
