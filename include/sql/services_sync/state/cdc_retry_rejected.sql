-- A run resuming a CDC window tries the batches the receiver rejected once more (the slot
-- cannot move past the window until they are acknowledged). Params (bind): window_id.
UPDATE {schema}.delivery_ledger
SET status = 'pending', error = NULL
WHERE window_id = %(window_id)s AND status = 'rejected';
