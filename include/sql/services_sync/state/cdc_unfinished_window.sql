-- The slot's window that is not acknowledged yet, if any (at most one: a unique index).
SELECT window_id, upto_lsn::text AS upto_lsn, floor_lsn::text AS floor_lsn, snapshot, status,
       changes, records, per_batch, lanes, built_at, opened_at
FROM {schema}.cdc_windows
WHERE slot_name = %(slot_name)s AND status <> 'acknowledged';
