-- CDC mode: the opening time of the newest acknowledged capture window; every change
-- committed before it was delivered.
SELECT max(opened_at) FROM {schema}.cdc_windows WHERE status = 'acknowledged';
