-- What CDC needs from the server, for check_cdc_setup's messages.
SELECT current_setting('wal_level') AS wal_level,
       current_setting('max_slot_wal_keep_size') AS max_slot_wal_keep_size,
       current_setting('max_replication_slots')::int AS max_replication_slots,
       (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)
           AS can_replicate;
