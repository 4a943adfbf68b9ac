-- A rebuild of a run produced fewer batches than its earlier build: drop the rest (their
-- outbox bodies go with them). Params (bind): dag_id, run_id, from_index.
DELETE FROM {schema}.delivery_ledger
WHERE dag_id = %(dag_id)s AND run_id = %(run_id)s AND batch_index >= %(from_index)s;
