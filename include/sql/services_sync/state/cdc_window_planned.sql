-- Keep a window's batch size: a resumed window is cut the same way, so its keys repeat even
-- when a later run is triggered with another batch_size.
UPDATE {schema}.cdc_windows SET per_batch = %(per_batch)s WHERE window_id = %(window_id)s;
