-- Binlog CDC: the GTID position of a window's end, saved as the window is acknowledged.
UPDATE {schema}.cdc_windows SET upto_gtid = %(gtid)s WHERE window_id = %(window_id)s;
