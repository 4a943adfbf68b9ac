-- Binlog CDC: where reading starts, recorded once per source (what creating a slot is on
-- PostgreSQL): an acknowledged, empty window ending at the binlog's end when the pipeline was
-- set up. Every later window starts at the newest acknowledged end (cdc_open_window.sql).
-- Params (bind): slot_name, upto_lsn, gtid, run_id. Returns a row only when it was recorded.
INSERT INTO {schema}.cdc_windows
    (slot_name, upto_lsn, status, changes, records, deletes, truncates, opened_by_run,
     captured_at, acknowledged_at, upto_gtid)
SELECT %(slot_name)s, %(upto_lsn)s::pg_lsn, 'acknowledged', 0, 0, 0, 0, %(run_id)s, now(), now(),
       %(gtid)s
WHERE NOT EXISTS (SELECT 1 FROM {schema}.cdc_windows WHERE slot_name = %(slot_name)s)
RETURNING window_id;
