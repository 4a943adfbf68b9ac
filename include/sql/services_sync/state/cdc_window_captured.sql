-- Mark a window captured, with its counts and lane count (ord and lane were set by
-- cdc_order_window.sql).
UPDATE {schema}.cdc_windows AS w
SET status = 'captured',
    lanes = %(lanes)s,
    captured_at = now(),
    read_snapshot = %(read_snapshot)s,
    changes = s.changes,
    records = s.records,
    deletes = s.deletes,
    truncates = s.truncates
FROM (
    SELECT count(*) FILTER (WHERE op <> 'snapshot') AS changes,
           count(ord) AS records,
           count(*) FILTER (WHERE op = 'delete') AS deletes,
           count(*) FILTER (WHERE op = 'truncate') AS truncates
    FROM {schema}.cdc_changes
    WHERE window_id = %(window_id)s
) AS s
WHERE w.window_id = %(window_id)s
RETURNING w.changes, w.records, w.deletes, w.truncates;
