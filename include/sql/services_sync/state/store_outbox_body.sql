-- Put a batch's body (gzip of the exact JSON bytes to send) in the outbox, in the transaction
-- that records its ledger row. Params (bind): dag_id, run_id, batch_index, body (bytea).
INSERT INTO {schema}.outbox (dag_id, run_id, batch_index, body)
VALUES (%(dag_id)s, %(run_id)s, %(batch_index)s, %(body)s)
ON CONFLICT (dag_id, run_id, batch_index) DO UPDATE SET body = EXCLUDED.body;
