-- Create the logical replication slot with the built-in pgoutput plugin. Needs wal_level =
-- logical, a free slot (max_replication_slots) and the REPLICATION attribute (or superuser).
-- The slot belongs to the current database and starts at the current end of WAL. Creation
-- WAITS for every transaction already running with a transaction id to finish (it builds a
-- consistent snapshot), and fails in a transaction that has already written.
-- Run only when find_slot.sql found nothing.
SELECT slot_name::text AS slot_name,
       lsn::text AS lsn
FROM pg_create_logical_replication_slot(%(slot_name)s::name, 'pgoutput');
