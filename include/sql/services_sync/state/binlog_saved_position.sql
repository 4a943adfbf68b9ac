-- Binlog CDC: the saved position (the newest acknowledged window's end) with its GTID position,
-- and the unfinished window, if any. Params (bind): slot_name.
-- (Ordered on the pg_lsn column, w.upto_lsn: an ORDER BY on the output name would sort text.)
SELECT (SELECT max(w.upto_lsn)::text FROM {schema}.cdc_windows AS w
        WHERE w.slot_name = %(slot_name)s AND w.status = 'acknowledged') AS saved_lsn,
       (SELECT w.upto_gtid FROM {schema}.cdc_windows AS w
        WHERE w.slot_name = %(slot_name)s AND w.status = 'acknowledged'
        ORDER BY w.upto_lsn DESC LIMIT 1) AS saved_gtid,
       (SELECT w.status FROM {schema}.cdc_windows AS w
        WHERE w.slot_name = %(slot_name)s AND w.status <> 'acknowledged') AS open_status,
       (SELECT w.upto_lsn::text FROM {schema}.cdc_windows AS w
        WHERE w.slot_name = %(slot_name)s AND w.status <> 'acknowledged') AS open_upto_lsn;
