-- Open the next window of a slot: up to upto_lsn (the flushed end of WAL now), and above the
-- last acknowledged window's end (floor_lsn): an advance that a crash undid (it is durable only
-- after a checkpoint) must not deliver those transactions under new keys a second time.
INSERT INTO {schema}.cdc_windows (slot_name, upto_lsn, floor_lsn, snapshot, opened_by_run)
SELECT %(slot_name)s, %(upto_lsn)s::pg_lsn,
       (SELECT max(upto_lsn) FROM {schema}.cdc_windows
        WHERE slot_name = %(slot_name)s AND status = 'acknowledged'),
       %(snapshot)s, %(run_id)s
RETURNING window_id, upto_lsn::text AS upto_lsn, floor_lsn::text AS floor_lsn, snapshot, status,
          changes, records, per_batch, lanes, built_at, opened_at;
