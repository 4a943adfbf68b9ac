-- Release the lane lock of lock_lane.sql. Params (bind): dag_id, lane.
SELECT pg_advisory_unlock(hashtext('services_sync.lane/' || %(dag_id)s), %(lane)s);
