-- A snapshot window ends where WAL was when its snapshot was read (see services_sync.cdc.capture), which is
-- after the end it was opened with.
UPDATE {schema}.cdc_windows SET upto_lsn = %(upto_lsn)s::pg_lsn WHERE window_id = %(window_id)s;
