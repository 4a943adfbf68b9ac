-- The publication the slot decodes (a catalog object of this database; the name is an
-- identifier composed with psycopg.sql, never a value). It publishes INSERT, UPDATE, DELETE
-- and TRUNCATE. From the moment it exists, an UPDATE or DELETE of the table FAILS ("cannot
-- update table ... because it does not have a replica identity and publishes updates") unless
-- the table has a replica identity: a primary key (REPLICA IDENTITY DEFAULT), a unique index
-- (REPLICA IDENTITY USING INDEX) or REPLICA IDENTITY FULL. cdc_source.create_publication checks
-- replica_identity.sql first. Needs the CREATE privilege on the database and table ownership.
-- Run only when find_publication.sql found nothing.
CREATE PUBLICATION {publication} FOR TABLE service_requests;
