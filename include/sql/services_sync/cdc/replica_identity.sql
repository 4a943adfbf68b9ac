-- Whether UPDATE and DELETE of service_requests can be published: relreplident is d (default:
-- the primary key, if there is one), n (nothing), f (full row) or i (an index chosen with
-- REPLICA IDENTITY USING INDEX). Without a usable identity, a publication makes the
-- application's UPDATEs and DELETEs of the table fail.
SELECT c.relreplident::text AS replica_identity,
       EXISTS (
           SELECT 1 FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisprimary
       ) AS has_primary_key,
       EXISTS (
           SELECT 1 FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisreplident
       ) AS has_identity_index
FROM pg_class AS c
WHERE c.oid = to_regclass('service_requests');
