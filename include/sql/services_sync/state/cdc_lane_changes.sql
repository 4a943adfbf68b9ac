-- The changes one delivery lane of a window delivers, in commit order (read with a server-side
-- cursor and cut into batches). Params (bind): window_id, lane.
SELECT commit_lsn::text AS commit_lsn, position, op, commit_time, row_data
FROM {schema}.cdc_changes
WHERE window_id = %(window_id)s AND lane = %(lane)s AND ord IS NOT NULL
ORDER BY ord;
