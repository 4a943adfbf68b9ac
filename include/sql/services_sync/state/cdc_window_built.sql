-- A window's batches are in the outbox: a run resuming the window sends them, it does not
-- build them again. Params (bind): window_id.
UPDATE {schema}.cdc_windows SET built_at = now() WHERE window_id = %(window_id)s;
