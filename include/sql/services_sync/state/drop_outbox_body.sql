-- A rebuilt batch has nothing to send any more: its old body leaves the outbox.
-- Params (bind): dag_id, run_id, batch_index.
DELETE FROM {schema}.outbox
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index = %(batch_index)s;
