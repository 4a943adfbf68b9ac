-- One sender per delivery lane of a DAG at a time (a backfill run and a scheduled run may both
-- drain the outbox): held by the lane's state connection until it ends or closes.
-- Params (bind): dag_id, lane.
SELECT pg_advisory_lock(hashtext('services_sync.lane/' || %(dag_id)s), %(lane)s);
