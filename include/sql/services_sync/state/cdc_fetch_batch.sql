-- The changes of one planned batch, in delivery order.
SELECT commit_lsn::text AS commit_lsn, position, op, commit_time, row_data
FROM {schema}.cdc_changes
WHERE window_id = %(window_id)s AND ord BETWEEN %(first_ord)s AND %(last_ord)s
ORDER BY ord;
