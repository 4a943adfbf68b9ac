-- Health of the logical slot: how much WAL it keeps on the server and whether it is at risk.
--   retained_wal_bytes  WAL kept for the slot (from restart_lsn): what fills the disk when the
--                       pipeline stops acknowledging.
--   pending_wal_bytes   WAL written since the last acknowledgement (confirmed_flush_lsn).
--   wal_status          reserved | extended | unreserved (will be lost at the next checkpoint)
--                       | lost (the slot is unusable: recreate it and resynchronise).
--   safe_wal_size       bytes that can still be written before the slot is lost (NULL when
--                       max_slot_wal_keep_size is -1, i.e. unlimited: the disk is the limit).
--   active              a session is reading the slot right now (a second reader fails).
SELECT s.slot_name::text AS slot_name,
       s.plugin::text AS plugin,
       s.slot_type,
       s.database::text AS database,
       s.active,
       s.active_pid,
       s.restart_lsn::text AS restart_lsn,
       s.confirmed_flush_lsn::text AS confirmed_flush_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_wal_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS pending_wal_bytes,
       s.wal_status,
       s.safe_wal_size,
       current_setting('max_slot_wal_keep_size') AS max_slot_wal_keep_size,
       pg_current_wal_lsn()::text AS current_wal_lsn
FROM pg_replication_slots AS s
WHERE s.slot_name = %(slot_name)s;
