-- The slot was advanced past a window: it is done. Its staged changes are no longer needed
-- (their keys are in the delivery ledger).
WITH done AS (
    UPDATE {schema}.cdc_windows
    SET status = 'acknowledged', acknowledged_at = now()
    WHERE window_id = %(window_id)s
    RETURNING window_id
)
DELETE FROM {schema}.cdc_changes WHERE window_id IN (SELECT window_id FROM done);
