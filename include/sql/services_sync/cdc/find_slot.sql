-- The replication slot of this name, if any (to create it only when missing).
SELECT slot_name::text AS slot_name,
       plugin::text AS plugin,
       slot_type,
       database::text AS database,
       current_database()::text AS current_database
FROM pg_replication_slots
WHERE slot_name = %(slot_name)s;
