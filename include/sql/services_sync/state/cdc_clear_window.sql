-- A capture that did not finish starts over: drop what it staged.
DELETE FROM {schema}.cdc_changes WHERE window_id = %(window_id)s;
